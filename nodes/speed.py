"""Speed Settings node: the generator's fast-path switches and torch.compile, per model output.

A thin adapter over :meth:`vtoonify_core.vtoonify.VToonify.set_fast_path`. The loader's cached
model is not modified: the node returns a bundle whose generator is a shallow copy sharing the
same weights, with its own switches, so other graphs using the same loader output keep theirs.
"""
from __future__ import annotations

import copy
import dataclasses

from . import _comfy

SPEED_NAME = "VToonify Speed Settings"
COMPILE_MODES = ("off", "default", "max-autotune", "reduce-overhead")
FOLD = ("auto", "on", "off")


def with_switches(model, *, fast: bool, channels_last: bool, fold: str, compile_mode: str):
    """A copy of the :class:`~vtoonify_core.pipeline.VToonifyModel` bundle whose generator (a
    shallow copy: same parameters) has these fast-path switches."""
    generator = copy.copy(model.generator)  # a new __dict__ that refers to the same parameters and modules
    generator.clear_bake_cache()  # its own baked weights and compiled bodies
    generator.set_fast_path(True, fast=bool(fast), channels_last=bool(channels_last),
                            fold_upsample={"auto": None, "on": True, "off": False}[fold],
                            compile_mode=None if compile_mode == "off" else compile_mode)
    return dataclasses.replace(model, generator=generator)


class SpeedSettings:
    """Turns the generator's speed switches on or off and optionally compiles it."""

    CATEGORY = "VToonify"
    FUNCTION = "apply"
    RETURN_TYPES = ("VTOONIFY_MODEL",)
    RETURN_NAMES = ("vtoonify_model",)
    OUTPUT_TOOLTIPS = ("The same model (same weights, no copy in memory) with these speed settings.",)
    DESCRIPTION = ("Speed switches of the VToonify generator; every setting gives the same images up to float "
                   "rounding (tested against the plain path). Defaults are what Load VToonify Model already "
                   "uses; put this node between the loader and Stylize Frames to change them, e.g. to compile "
                   "the generator for a long clip or to compare with the plain path.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vtoonify_model": ("VTOONIFY_MODEL", {"tooltip": "From Load VToonify Model."}),
                "bake_style": ("BOOLEAN", {"default": True,
                                           "tooltip": "Modulate the decoder weights once per clip style and run plain "
                                                      "batched convolutions (off: per-frame modulation, the official "
                                                      "computation)."}),
                "channels_last": ("BOOLEAN", {"default": True,
                                              "tooltip": "Channels-last memory layout (faster on CPUs and tensor-core "
                                                         "GPUs)."}),
                "fold_upsampling": (list(FOLD), {"default": "auto",
                                                 "tooltip": "Fold the blur of each up-sampling layer into its kernel. "
                                                            "auto: on in fp16/bf16 (faster there), off in fp32."}),
                "compile": (list(COMPILE_MODES), {"default": "off",
                                                  "tooltip": "torch.compile the generator: the first run of each frame "
                                                             "size compiles (a minute or more), later runs are faster. "
                                                             "reduce-overhead adds CUDA graphs (CUDA only). Falls "
                                                             "back to eager with a warning where compiling fails."}),
            },
        }

    def apply(self, vtoonify_model, bake_style=True, channels_last=True, fold_upsampling="auto", compile="off"):
        from ..vtoonify_core.errors import InputError

        with _comfy.node_errors(SPEED_NAME):
            if not hasattr(vtoonify_model, "generator") or not hasattr(vtoonify_model.generator, "set_fast_path"):
                raise InputError("vtoonify_model", "expected a model from Load VToonify Model.")
            if fold_upsampling not in FOLD:
                raise InputError("fold_upsampling", f"use one of {', '.join(FOLD)}, got {fold_upsampling!r}.")
            if compile not in COMPILE_MODES:
                raise InputError("compile", f"use one of {', '.join(COMPILE_MODES)}, got {compile!r}.")
            return (with_switches(vtoonify_model, fast=bake_style, channels_last=channels_last,
                                  fold=fold_upsampling, compile_mode=compile),)


NODE_CLASS_MAPPINGS = {"VToonifySpeedSettings": SpeedSettings}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifySpeedSettings": SPEED_NAME}
