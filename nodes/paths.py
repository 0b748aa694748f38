"""Files named in a prompt, turned into paths this pack may read or write.

Anyone who can queue a prompt (``POST /prompt``) chooses these names, so a name is only ever read
from ComfyUI's own folders or from folders the person running ComfyUI listed:

* a relative name is a file of ComfyUI's input folder; ``name [output]``, ``name [input]`` and
  ``name [temp]`` name a file of that folder, as ComfyUI's own loaders read them (and, as they
  do, the file must really be in that folder: a link out of it is not followed);
* an absolute path is read only if it lies inside the input, output or temp folder, or inside a
  folder listed in the environment variable ``VTOONIFY_ALLOWED_DIRS`` (separated by
  ``os.pathsep``: ``:`` on Linux and macOS, ``;`` on Windows).

Links and ``..`` are resolved before the check, so neither a link inside the input folder nor a
climb out of it reaches another file. A file that is missing and a file that may not be read get
the same message (a prompt cannot probe which files exist), and messages name the file as the
prompt gave it, never another path of the server. The list is read from the environment only:
ComfyUI's settings can be written over HTTP by the same people who queue prompts.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from . import _comfy

logger = logging.getLogger("vtoonify")

#: Environment variable listing further folders whose files may be read (``os.pathsep``-separated).
ALLOWED_DIRS_ENV = "VTOONIFY_ALLOWED_DIRS"
#: The annotations of ComfyUI's file names (``clip.mp4 [output]``), and the folder each names.
ANNOTATIONS = ("input", "output", "temp")


class FileRefused(FileNotFoundError):
    """A named file that is missing, not a file, or outside the folders that may be read (one message
    for all of them)."""


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(os.path.expanduser(path)))


def _comfy_folder(kind: str) -> str | None:
    """ComfyUI's input, output or temp folder (``None`` if this ComfyUI has none)."""
    get = getattr(_comfy.folder_paths(), f"get_{kind}_directory", None)
    try:
        return get() if callable(get) else None
    except Exception:  # noqa: BLE001 - a folder_paths without it
        return None


def extra_dirs() -> list[str]:
    """The folders listed in ``VTOONIFY_ALLOWED_DIRS`` (absolute ones; others are ignored with a warning)."""
    out = []
    for entry in os.environ.get(ALLOWED_DIRS_ENV, "").split(os.pathsep):
        entry = os.path.expanduser(entry.strip())
        if not entry:
            continue
        if not os.path.isabs(entry):
            logger.warning("VToonify: %s: ignoring %r, not an absolute path", ALLOWED_DIRS_ENV, entry)
            continue
        out.append(entry)
    return out


def allowed_roots() -> list[str]:
    """Every folder whose files may be read, links resolved: ComfyUI's input, output and temp folders
    and the folders of ``VTOONIFY_ALLOWED_DIRS``."""
    roots = [_comfy_folder(kind) for kind in ANNOTATIONS] + extra_dirs()
    return list(dict.fromkeys(_real(r) for r in roots if r))


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath((path, root)) == root
    except ValueError:  # another drive (Windows)
        return False


def is_allowed(path: str) -> bool:
    """Whether ``path`` (links and ``..`` resolved) lies inside one of :func:`allowed_roots`."""
    try:
        real = _real(path)
    except (ValueError, OSError):  # NUL byte, unreadable link
        return False
    return any(_inside(real, root) for root in allowed_roots())


def refused_message(name: str, input_name: str) -> str:
    """The one message for a file that is missing or may not be read (the same for both)."""
    folder = _comfy_folder("input")
    where = f" ({folder})" if folder else ""
    return (f"{input_name}: {name!r} is not a file this ComfyUI can read. Give the name of a file in ComfyUI's "
            f"input folder{where} (upload it there; 'name [output]' for a file of the output folder), or an "
            f"absolute path inside the input, output or temp folder or inside a folder listed in the environment "
            f"variable {ALLOWED_DIRS_ENV} of the ComfyUI server.")


def resolve_readable(name: str, input_name: str) -> Path:
    """The real path of the file ``name`` names, if it exists and may be read; :class:`FileRefused` otherwise.

    Checks nothing but the name and the file's existence (a ``stat``): cheap enough for queue time.
    """
    from ..vtoonify_core.errors import InputError

    text = (name or "").strip().strip('"').strip()
    if not text:
        raise InputError(input_name, "give the name of a file in ComfyUI's input folder (or an allowed absolute "
                                     "path).")
    refused = FileRefused(refused_message(text, input_name))
    if "\x00" in text:
        raise refused
    expanded = os.path.expanduser(text)
    if os.path.isabs(expanded):
        candidate, allowed = expanded, is_allowed(expanded)
    else:  # a name in one of ComfyUI's folders, read as ComfyUI reads it, and kept inside that folder
        kind, base = "input", text
        for k in ANNOTATIONS:
            if text.endswith(f"[{k}]"):
                kind, base = k, text[:-len(k) - 2].rstrip()
        folder = _comfy_folder(kind)
        fp = _comfy.folder_paths()
        try:
            annotated = getattr(fp, "get_annotated_filepath", None)
            candidate = annotated(text) if callable(annotated) else os.path.join(folder or "", base)
        except (ValueError, OSError):  # ComfyUI refuses a climb out of its folder
            raise refused from None
        try:
            allowed = bool(folder) and _inside(_real(candidate), _real(folder))
        except (ValueError, OSError):
            allowed = False
    if not allowed:
        raise refused
    real = os.path.realpath(candidate)
    if not os.path.isfile(real):
        raise refused
    return Path(real)


def resolve_output(name: str, input_name: str, shown: str | None = None) -> tuple[Path, str, str]:
    """``(full path, subfolder, file name)`` of a relative ``name`` inside ComfyUI's output folder.

    Absolute names, climbs out (``..``) and links that lead out of the output folder are refused
    (the message shows ``shown``, the name as the user gave it, default ``name``).
    """
    from ..vtoonify_core.errors import InputError

    root_text = _comfy_folder("output")
    if not root_text:
        raise InputError(input_name, "this ComfyUI has no output folder.")
    root = Path(os.path.realpath(root_text))
    text = (name or "").strip().replace("\\", "/")
    shown = name if shown is None else shown
    bad = InputError(input_name, f"{shown!r} must be a relative file name inside the output folder {root_text} "
                                 f"(sub-folders allowed, no '..').")
    if not text or "\x00" in text or os.path.isabs(text) or text.startswith("/") or ".." in text.split("/"):
        raise bad
    full = Path(os.path.realpath(root / text))
    if not _inside(os.path.normcase(str(full)), os.path.normcase(str(root))) or full == root:
        raise bad
    rel = full.relative_to(root)
    return full, rel.parent.as_posix() if rel.parent != Path(".") else "", rel.name
