"""vtoonify_core: a faithful pure-PyTorch VToonify (Yang et al., SIGGRAPH Asia 2022).

No ComfyUI import anywhere in this package: it is usable and testable alone.
"""
