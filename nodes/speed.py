"""Speed Settings node: the generator's fast-path switches and torch.compile, per model output.

A thin adapter over :meth:`vtoonify_core.models.vtoonify.VToonify.set_fast_path`. The loader's
cached model is not modified: the node returns a bundle whose generator is a shallow copy sharing
the same weights, with its own switches, so other graphs using the same loader output keep theirs.
ComfyUI loads and accounts the shared weights through a clone of the loader's patcher
(:meth:`~.bundle.ComfyVToonifyModel.with_generator`).
"""
from __future__ import annotations

import copy

from . import _comfy, inputs

SPEED_NAME = "VToonify Speed Settings"
COMPILE_MODES = ("off", "default", "max-autotune", "reduce-overhead")
#: fold_upsampling labels -> the generator's fold_upsample switch
FOLD = {"auto": None, "on": True, "off": False}


def with_switches(model, *, fast: bool, channels_last: bool, fold: str, compile_mode: str,
                  reuse_host_memory: bool = True):
    """A copy of the bundle whose generator (a shallow copy: same parameters and submodules) has
    these fast-path switches; ``fold`` and ``compile_mode`` are labels of the node's lists."""
    model = inputs.require_model(model)
    generator = copy.copy(model.generator)  # a new __dict__ that refers to the same parameters and modules
    generator.clear_bake_cache()  # its own baked weights and compiled bodies
    generator.set_fast_path(True, fast=bool(fast), channels_last=bool(channels_last), fold_upsample=FOLD[fold],
                            compile_mode=None if compile_mode == "off" else compile_mode,
                            reuse_host_memory=bool(reuse_host_memory))
    return model.with_generator(generator)


class SpeedSettings:
    """Turns the generator's speed switches on or off and optionally compiles it."""

    CATEGORY = "VToonify"
    FUNCTION = "apply"
    RETURN_TYPES = (inputs.MODEL,)
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
                "vtoonify_model": inputs.vtoonify_model(),
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
            "optional": {
                "reuse_cpu_memory": ("BOOLEAN", {"default": True,
                                                 "tooltip": "On the CPU (Linux), keep the generator's buffers for "
                                                            "the next chunk instead of having the system hand out and "
                                                            "zero fresh memory each time; the memory goes back when "
                                                            "the clip is done. Buffers over 64 MiB (large frames or "
                                                            "batches) are still fresh in ComfyUI's worker thread."}),
            },
        }

    def apply(self, vtoonify_model, bake_style=True, channels_last=True, fold_upsampling="auto", compile="off",
              reuse_cpu_memory=True):
        with _comfy.node_errors(SPEED_NAME):
            return (with_switches(vtoonify_model, fast=bake_style, channels_last=channels_last, fold=fold_upsampling,
                                  compile_mode=compile, reuse_host_memory=reuse_cpu_memory),)


NODE_CLASS_MAPPINGS = {"VToonifySpeedSettings": SpeedSettings}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifySpeedSettings": SPEED_NAME}
