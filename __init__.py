"""VToonify for ComfyUI (Yang et al., SIGGRAPH Asia 2022): node registration.

ComfyUI loads this folder as a package; the nodes live in ``./nodes`` (imported relatively,
ComfyUI has its own top-level ``nodes`` module) and the pure library in ``./vtoonify_core``.
"""
WEB_DIRECTORY = "./web"

if __package__:  # loaded as a package, as ComfyUI loads custom_nodes/<pack>/__init__.py
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, free_cache
else:
    # imported as a plain module, e.g. by pytest setting up the repository root when the checkout's
    # folder name is not a valid package name: there is no package to import the nodes from
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

    def free_cache() -> None:
        """Nothing is cached when the pack is not loaded as a package."""

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY", "free_cache"]
