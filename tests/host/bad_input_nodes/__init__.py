"""Test-only ComfyUI nodes for the bad-input campaign (``scripts/bad_inputs.py``); never part of the pack.

ComfyUI's core nodes only make well-formed IMAGE tensors (finite, 3 channels, float32, at least one
frame of at least 1x1 px), but other custom nodes hand on whatever they make: NaN frames from an
fp16 VAE decode, 1-, 2- or 4-channel images, empty batches, uint8 tensors. **Bad Input Image**
makes such tensors, alone or from a connected image, so that the campaign can send them to the
pack's nodes through the HTTP API as any other node would.

The campaign and the host tests' ``comfy_server`` fixture link this folder into the server's
``custom_nodes/`` before ComfyUI starts. Node ids start with ``BadInput`` (not ``VToonify``: the
pack's web extension touches ``VToonify*`` nodes only).
"""
from __future__ import annotations

import torch

#: what each kind of bad IMAGE is (the campaign's documentation quotes these)
KINDS = {
    "nan": "NaN in the first frame (a 16x16 patch, or the whole frame when smaller)",
    "nan_all": "NaN everywhere",
    "inf": "+inf in the first frame (a 16x16 patch)",
    "one_channel": "[B, H, W, 1] (grey)",
    "two_channel": "[B, H, W, 2]",
    "four_channel": "[B, H, W, 4] (RGBA)",
    "five_channel": "[B, H, W, 5]",
    "uint8": "uint8 values 0..255 instead of float 0..1",
    "float16": "float16 instead of float32",
    "float64": "float64 instead of float32",
    "empty_batch": "[0, H, W, 3]: no frames",
    "zero_size": "[B, 0, 0, 3]: frames of 0x0 px",
    "negative": "values in [-1, 0]",
    "above_one": "values in [0, 4]",
    "three_dims": "[H, W, 3]: no batch dimension",
    "five_dims": "[1, B, H, W, 3]: one dimension too many",
    "bool": "a bool tensor",
    "not_a_tensor": "a Python list instead of a tensor",
}


def _base(width: int, height: int, frames: int, image):
    if image is not None:
        return image.clone()
    g = torch.Generator().manual_seed(0)
    return torch.rand(frames, height, width, 3, generator=g)


def make_bad_image(kind: str, width: int = 64, height: int = 64, frames: int = 1, image=None):
    """The IMAGE of ``kind`` (see :data:`KINDS`), from ``image`` when given, else from noise."""
    x = _base(width, height, frames, image)
    if kind in ("nan", "inf"):
        x[0, :16, :16, :] = float("nan") if kind == "nan" else float("inf")
        return x
    if kind == "nan_all":
        return torch.full_like(x, float("nan"))
    if kind == "one_channel":
        return x.mean(-1, keepdim=True)
    if kind == "two_channel":
        return x[..., :2].contiguous()
    if kind == "four_channel":
        return torch.cat([x, torch.ones_like(x[..., :1])], -1)
    if kind == "five_channel":
        return torch.cat([x, x[..., :2]], -1)
    if kind == "uint8":
        return (x * 255).round().to(torch.uint8)
    if kind == "float16":
        return x.half()
    if kind == "float64":
        return x.double()
    if kind == "empty_batch":
        return x[:0]
    if kind == "zero_size":
        return x[:, :0, :0, :]
    if kind == "negative":
        return -x
    if kind == "above_one":
        return x * 4
    if kind == "three_dims":
        return x[0]
    if kind == "five_dims":
        return x[None]
    if kind == "bool":
        return x > 0.5
    if kind == "not_a_tensor":
        return x[0, :2, :2].tolist()
    raise ValueError(f"kind: unknown kind {kind!r}; use one of {', '.join(KINDS)}")


class BadInputImage:
    """Makes an IMAGE that no core node makes (see :data:`KINDS`)."""

    CATEGORY = "testing/bad inputs"
    FUNCTION = "make"
    RETURN_TYPES = ("IMAGE",)
    DESCRIPTION = "Test helper of comfyui-vtoonify's bad-input campaign: a malformed IMAGE."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "kind": (list(KINDS), {"default": "nan"}),
                "width": ("INT", {"default": 64, "min": 1, "max": 4096}),
                "height": ("INT", {"default": 64, "min": 1, "max": 4096}),
                "frames": ("INT", {"default": 1, "min": 1, "max": 64}),
            },
            "optional": {"image": ("IMAGE", {"tooltip": "Made bad instead of noise when connected."})},
        }

    def make(self, kind, width=64, height=64, frames=1, image=None):
        return (make_bad_image(kind, width, height, frames, image),)


NODE_CLASS_MAPPINGS = {"BadInputImage": BadInputImage}
NODE_DISPLAY_NAME_MAPPINGS = {"BadInputImage": "Bad Input Image (test helper)"}
