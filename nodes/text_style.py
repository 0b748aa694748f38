"""Edit Style by Text (VToonify): a style code moved by a sentence under a local CLIP (StyleCLIP
latent optimisation through the checkpoint's backbone), with before/after renders of the face."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from . import _comfy, inputs

TEXT_NAME = "Edit Style by Text (VToonify)"
#: Shown in the CLIP list when no CLIP folder is found.
NO_CLIP = "(no CLIP found: put one in models/clip/)"
#: Synthesis resolutions (first = default).
RESOLUTIONS = ("256", "32", "64", "128", "512", "1024")
LAYERS = {"all": "all", "structure (0-6)": "structure", "colour (7-17)": "colour", "custom range": None}

_CLIP_CACHE: dict = {}
_CLIP_LOCK = threading.Lock()


def clip_roots() -> list[Path]:
    """Where CLIP folders are looked for: ComfyUI's ``clip`` folders, then ``models/vtoonify/clip``."""
    fp = _comfy.folder_paths()
    roots: list[Path] = []
    for name, sub in (("clip", None), ("text_encoders", None), ("vtoonify", "clip")):
        try:
            paths = fp.get_folder_paths(name)
        except (KeyError, AttributeError):
            continue
        for p in paths:
            root = Path(p) / sub if sub else Path(p)
            if root not in roots:
                roots.append(root)
    return roots


def clip_choices() -> dict[str, Path]:
    from ..vtoonify_core.clipmodels import find_clip_models

    return find_clip_models(clip_roots())


def load_clip_cached(path: Path, device: torch.device):
    """The CLIP of ``path`` on ``device`` (float32), the last one kept (a CLIP takes a few seconds to read)."""
    from ..vtoonify_core.clipmodels import load_clip

    config = path / ("open_clip_config.json" if (path / "open_clip_config.json").is_file() else "config.json")
    st = config.stat() if config.is_file() else None
    key = (os.path.realpath(path), st.st_mtime_ns if st else 0, str(device))
    with _CLIP_LOCK:
        hit = _CLIP_CACHE.get(key)
        if hit is not None:
            return hit
        _CLIP_CACHE.clear()
        clip = load_clip(path, device, torch.float32)
        _CLIP_CACHE[key] = clip
        return clip


class EditStyleByText:
    """A style code edited by a sentence (CLIP), for Stylize Frames, Style Mix or Style Keyframes."""

    CATEGORY = "VToonify"
    FUNCTION = "edit"
    RETURN_TYPES = (inputs.STYLE, "IMAGE", "STRING")
    RETURN_NAMES = ("style", "before_after", "edit_info")
    OUTPUT_TOOLTIPS = (
        "The edited W+ style code (same model and colour mode as the input style).",
        "The face the backbone synthesises from the input code and from the edited code, at the resolution "
        "(a batch of two: before, after).",
        "The layers moved, the CLIP loss before and after, the identity distance and where it stopped.",
    )
    DESCRIPTION = ("StyleCLIP latent optimisation (as in CPTR) of a VToonify style code: the code moves so that the "
                   "face the checkpoint's backbone synthesises (VToonify-D: DualStyleGAN with the code as the "
                   "exemplar; VToonify-T: the Toonify StyleGAN) matches the text under CLIP, plus an L2 pull to the "
                   "start code. With a source text the change from source to text is matched instead (directional "
                   "loss). Needs a full local CLIP (image and text towers; Hugging Face transformers or open_clip "
                   "folder) in models/clip/ or models/vtoonify/clip/. Cancel stops early and returns the best code "
                   "so far.")

    @classmethod
    def INPUT_TYPES(cls):
        names = sorted(clip_choices()) or [NO_CLIP]
        return {
            "required": {
                "vtoonify_model": inputs.vtoonify_model(),
                "style": inputs.style(tooltip="The style code to edit (Extract Style Code, Exemplar Style From "
                                              "Image, Style Mix ...), made with this model."),
                "text": ("STRING", {"default": "a cartoon with big eyes", "multiline": True,
                                    "tooltip": "What the face should look like."}),
                "clip_model": (names, {"tooltip": "A full CLIP folder (both towers) from models/clip/ or "
                                                  "models/vtoonify/clip/, e.g. openai/clip-vit-base-patch32."}),
                "steps": ("INT", {"default": 50, "min": 0, "max": 1000, "step": 1,
                                  "tooltip": "Adam steps; each runs the backbone and CLIP forward and backward."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                       "tooltip": "How much of the change found is applied (1 = as optimised)."}),
                "layers": (list(LAYERS), {"default": "all",
                                          "tooltip": "W+ layers that may move: structure 0-6, colour 7-17, or "
                                                     "first_layer..last_layer (only those VToonify reads)."}),
                "first_layer": ("INT", {"default": 0, "min": 0, "max": 17, "tooltip": "custom range: first layer."}),
                "last_layer": ("INT", {"default": 17, "min": 0, "max": 17, "tooltip": "custom range: last layer."}),
                "source_text": ("STRING", {"default": "", "tooltip": "Optional: what the start face is ('a face'); "
                                                                     "switches to the directional loss."}),
                "learning_rate": ("FLOAT", {"default": 0.1, "min": 0.001, "max": 1.0, "step": 0.001,
                                            "tooltip": "Adam learning rate on the W+ code (StyleCLIP: 0.1)."}),
                "l2_weight": ("FLOAT", {"default": 0.008, "min": 0.0, "max": 10.0, "step": 0.001,
                                        "tooltip": "Pull to the start code (summed squares; StyleCLIP: 0.008)."}),
                "identity_weight": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.05,
                                              "tooltip": "dlib face-descriptor distance to the start face, added "
                                                         "when the best step is chosen (not differentiable)."}),
                "resolution": (list(RESOLUTIONS), {"default": "256",
                                                   "tooltip": "Where the synthesis stops: 256 reaches layers 0-13, "
                                                              "1024 all (slow on a CPU)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1,
                                 "tooltip": "Draws the random views of augmentations."}),
                "augmentations": ("INT", {"default": 0, "min": 0, "max": 16,
                                          "tooltip": "Random crops/flips scored per step (0 = whole face only)."}),
            },
            "optional": {
                "face": ("IMAGE", {"tooltip": "VToonify-D: the face whose content code is kept fixed (first "
                                              "image; default: the style code itself)."}),
            },
        }

    def edit(self, vtoonify_model, style, text, clip_model, steps=50, strength=1.0, layers="all", first_layer=0,
             last_layer=17, source_text="", learning_rate=0.1, l2_weight=0.008, identity_weight=0.0,
             resolution="256", seed=0, augmentations=0, face=None):
        from ..vtoonify_core.checks import check_code, validate_frames
        from ..vtoonify_core.clipmodels import CLIP_HINT
        from ..vtoonify_core.errors import CheckpointError, InputError
        from ..vtoonify_core.styles.codes import encode_face, prepare_style_image
        from ..vtoonify_core.styles.text import optimise_style_by_text, render_style

        with _comfy.node_errors(TEXT_NAME):
            model = inputs.require_model(vtoonify_model)
            check_code(style, "style")
            folders = clip_choices()
            if clip_model not in folders:
                raise CheckpointError(f"clip_model: {clip_model!r} is not a CLIP folder found in "
                                      f"{', '.join(str(r) for r in clip_roots()) or 'models/clip'}. Put {CLIP_HINT}.")
            selection = LAYERS.get(layers, layers)
            if selection is None:
                if int(first_layer) > int(last_layer):
                    raise InputError("first_layer", f"{first_layer} is after last_layer {last_layer}.")
                selection = list(range(int(first_layer), int(last_layer) + 1))
            size = int(resolution)
            content = None
            if face is not None and model.backbone == "dualstylegan":
                validate_frames(_comfy.image_to_frames(face, "face"), "face")
                aligned, _ = prepare_style_image(_comfy.image_to_uint8(face, 0))
                model.load("encoder")
                content = encode_face(model, aligned)
            model.load("generator")
            clip = load_clip_cached(folders[clip_model], model.device)
            hooks = _comfy.run_hooks(max(1, int(steps)))
            result = optimise_style_by_text(
                model, style, text, clip, steps=int(steps), lr=float(learning_rate), l2_weight=float(l2_weight),
                layers=selection, source_text=source_text or None, seed=int(seed), size=size,
                strength=float(strength), augmentations=int(augmentations), identity_weight=float(identity_weight),
                content=content, **hooks.kwargs(output=False, oom=False))
            before = render_style(model, style, size=size, content=content)
            after = render_style(model, result.style, size=size, content=content)
            pair = torch.cat([before, after])
            _comfy.show_preview(((torch.cat([before, after], dim=-1)[0] + 1) * 0.5).permute(1, 2, 0))
            return (result.style, _comfy.signed_to_image(pair), describe(result, clip_model))


def describe(result, clip_name: str) -> str:
    """The edit in a few lines for the node's info output."""
    idx = result.layers
    lines = [result.style.describe(),
             f"CLIP {clip_name}; layers {idx[0]}-{idx[-1]}" + ("" if list(idx) == list(range(idx[0], idx[-1] + 1))
                                                               else f" ({len(idx)} of them)"),
             f"CLIP loss {result.clip_losses[0]:.4f} -> {result.clip_losses[result.best]:.4f} (step {result.best} "
             f"of {result.steps})"]
    if result.identity:
        lines.append(f"identity distance (dlib) {result.identity[result.best]:.3f}; below 0.6 counts as the same "
                     f"person")
    if result.interrupted:
        lines.append(f"stopped by Cancel after {result.steps} steps: the best code so far is returned")
    return "\n".join(lines)


NODE_CLASS_MAPPINGS = {"VToonifyEditStyleByText": EditStyleByText}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyEditStyleByText": TEXT_NAME}
