"""The example inputs the templates load (``example_inputs/`` of the pack), put into ComfyUI's input folder.

When the pack loads, every example that ComfyUI's input folder lacks is copied there, so the
templates' Load Image and Load Video nodes find their files on a fresh install. A file the user
already has under that name is never replaced (the copy is created exclusively).
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Optional

from . import _comfy

logger = logging.getLogger("vtoonify")

#: The pack's example inputs (a public-domain portrait, a reference portrait and a short clip). Not
#: ``examples/``: ComfyUI serves a pack's ``examples/`` folder as its templates folder (before
#: ``workflows/``), which would hide the templates' thumbnails and files.
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "example_inputs"


def example_files() -> list[Path]:
    """The shipped example inputs, by name."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.is_file() and not p.name.startswith("."))


def install_examples(input_dir: Optional[os.PathLike] = None) -> list[Path]:
    """Copy each example missing from ``input_dir`` (default: ComfyUI's input folder) into it; returns
    the files written. Existing files (or links) of the same name are left alone; a failed copy is
    logged and leaves no partial file."""
    folder = Path(input_dir if input_dir is not None else _comfy.folder_paths().get_input_directory())
    written = []
    for src in example_files():
        dest = folder / src.name
        if dest.exists() or dest.is_symlink():
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as fin, open(dest, "xb") as fout:  # "x": never over a file created meanwhile
                try:
                    shutil.copyfileobj(fin, fout)
                except BaseException:
                    fout.close()
                    dest.unlink(missing_ok=True)
                    raise
        except FileExistsError:
            continue
        except OSError as exc:
            logger.warning("VToonify: could not copy the example %s into %s: %s", src.name, folder, exc)
            continue
        written.append(dest)
    if written:
        logger.info("VToonify: copied the example inputs %s into %s", ", ".join(p.name for p in written), folder)
    return written
