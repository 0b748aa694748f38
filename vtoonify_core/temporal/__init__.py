"""Temporal coherence: optical flow, the paper's smoothing of parsing maps over time, deflicker of
stylized clips and the warping-error metric."""
from .deflicker import Deflicker, deflicker, warping_error
from .flow import DISFlow, RAFTFlow, backward_warp, estimate_flow, get_flow_backend, occlusion_mask
from .smoothing import chunk_with_context, fuse_window, smooth_clip, smooth_parsing

__all__ = ["DISFlow", "Deflicker", "RAFTFlow", "backward_warp", "chunk_with_context", "deflicker", "estimate_flow",
           "fuse_window", "get_flow_backend", "occlusion_mask", "smooth_clip", "smooth_parsing", "warping_error"]
