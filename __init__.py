"""VToonify for ComfyUI (Yang et al., SIGGRAPH Asia 2022): node registration.

ComfyUI loads this folder as a package; the nodes live in ``./nodes`` (imported relatively,
ComfyUI has its own top-level ``nodes`` module) and the pure library in ``./vtoonify_core``.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, free_cache

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY", "free_cache"]
