"""ComfyUI nodes of the VToonify pack: thin adapters over :mod:`vtoonify_core` (one module per node family).

Import this package relatively (``from .nodes import ...``): ComfyUI has a top-level module
called ``nodes`` too.
"""
from __future__ import annotations

import importlib
import logging

from . import loader
from .cache import free_cache

logger = logging.getLogger("vtoonify")

#: node families, one module each; a family whose optional dependency is missing is skipped with
#: a logged reason instead of taking the whole pack down
FAMILIES = ("loader", "style", "parsing", "stylize", "deflicker", "style_control", "video", "speed", "merge",
            "text_style", "faces", "student")

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _name in FAMILIES:
    try:
        _family = importlib.import_module(f".{_name}", __name__)
    except ImportError as exc:
        logger.error("VToonify: the %s nodes are unavailable: %s", _name, exc)
        continue
    NODE_CLASS_MAPPINGS.update(_family.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_family.NODE_DISPLAY_NAME_MAPPINGS)

try:  # make models/vtoonify (and models/vtoonify_students) known to ComfyUI as soon as the pack loads
    loader.register_folder()
    if "student" in FAMILIES:
        from .student import register_folder as _register_students

        _register_students()
except ImportError:  # imported outside ComfyUI
    pass

try:  # the templates' example inputs into ComfyUI's input folder (never over a user's file)
    from . import examples

    examples.install_examples()
except Exception as exc:  # noqa: BLE001 - outside ComfyUI, or an unwritable input folder: the nodes still load
    logger.debug("VToonify: example inputs not installed: %s", exc)

try:  # /vtoonify/ routes of the web UI (registered only inside ComfyUI's server)
    from . import routes  # noqa: F401
except ImportError as exc:
    logger.error("VToonify: the web UI routes are unavailable: %s", exc)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "free_cache"]
