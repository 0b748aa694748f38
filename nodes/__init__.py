"""ComfyUI nodes of the VToonify pack: thin adapters over :mod:`vtoonify_core` (one module per node family).

Import this package relatively (``from .nodes import ...``): ComfyUI has a top-level module
called ``nodes`` too.
"""
from __future__ import annotations

from . import loader, parsing, style, stylize
from .cache import free_cache

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _family in (loader, style, parsing, stylize):
    NODE_CLASS_MAPPINGS.update(_family.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_family.NODE_DISPLAY_NAME_MAPPINGS)

try:  # make models/vtoonify known to ComfyUI as soon as the pack loads
    loader.register_folder()
except ImportError:  # imported outside ComfyUI
    pass

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "free_cache"]
