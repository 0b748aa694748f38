"""Full CLIP models (image and text towers) read from local folders, behind one interface:
``encode_image([B, 3, H, W] in [0, 1]) -> [B, D]`` and ``encode_text(list of str) -> [B, D]``.

Two layouts: a Hugging Face transformers folder (``config.json`` of ``model_type`` ``clip``, the
weights, the tokenizer files) and an open_clip folder (``open_clip_config.json`` and its weights).
Nothing is downloaded. Text encoders of Stable Diffusion (one tower only) are refused by name.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, InputError, PackageMissingError
from ..types import DeviceLike, PathLike

logger = logging.getLogger("vtoonify")

#: Weight files of a transformers CLIP folder, in the order they are looked for.
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: Weight files of an open_clip folder (as its Hugging Face repositories name them).
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors")
#: OpenAI CLIP's normalisation (used when the folder does not say otherwise).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Where the docs tell users to put a CLIP (relative to ComfyUI's models folder).
CLIP_HINT = ("a full CLIP folder (both towers), e.g. openai/clip-vit-base-patch32 from Hugging Face with its "
             "config.json, model.safetensors and tokenizer files, in models/clip/ or models/vtoonify/clip/")


@runtime_checkable
class ClipModel(Protocol):
    """What text editing needs of a CLIP: both towers, embeddings in one joint space."""

    def encode_image(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] (resized and normalised here) -> ``[B, D]``."""

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """``B`` sentences -> ``[B, D]``."""


def _prepare(images: Tensor, size: int, mean: Tensor, std: Tensor) -> Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError("images", f"CLIP takes images [B, 3, H, W] in [0, 1], got {tuple(images.shape)}.")
    x = images.to(mean.device, mean.dtype)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return (x - mean) / std


class _Normalised(nn.Module):
    """Shared parts: device, image size and normalisation buffers."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device


class TransformersClip(_Normalised):
    """A transformers ``CLIPModel`` with its tokenizer (frozen)."""

    def __init__(self, model: nn.Module, tokenizer, image_size: int, mean, std, context_length: int,
                 source: str = ""):
        super().__init__(image_size, mean, std)
        self.model, self.tokenizer, self.context_length, self.source = model, tokenizer, int(context_length), source

    def encode_image(self, images: Tensor) -> Tensor:
        dtype = self.model.visual_projection.weight.dtype
        x = _prepare(images, self.image_size, self.mean, self.std).to(dtype)
        pooled = self.model.vision_model(pixel_values=x).pooler_output
        return self.model.visual_projection(pooled).float()

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
        pooled = self.model.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return self.model.text_projection(pooled).float()


class OpenClip(_Normalised):
    """An open_clip ``CLIP`` with its tokenizer (frozen)."""

    def __init__(self, model: nn.Module, tokenizer, image_size: int, mean, std, source: str = ""):
        super().__init__(image_size, mean, std)
        self.model, self.tokenizer, self.source = model, tokenizer, source

    def encode_image(self, images: Tensor) -> Tensor:
        dtype = next(self.model.visual.parameters()).dtype
        return self.model.encode_image(_prepare(images, self.image_size, self.mean, self.std).to(dtype)).float()

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()


# ---------------------------------------------------------------------------------------------- finding


def detect_format(path: PathLike) -> str:
    """``'transformers'`` or ``'open_clip'`` for a CLIP folder.

    Raises:
        CheckpointError: not a folder of either layout (a single file, an SD text encoder ...).
    """
    path = Path(path)
    if path.is_file():
        raise CheckpointError(f"{path.name}: {_single_file_reason(path)} Text editing needs {CLIP_HINT}.")
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such CLIP folder. Put {CLIP_HINT}.")
    if (path / "open_clip_config.json").is_file():
        return "open_clip"
    if (path / "config.json").is_file():
        return "transformers"
    raise CheckpointError(f"{path.name}: neither config.json (transformers) nor open_clip_config.json (open_clip) "
                          f"in this folder. Put {CLIP_HINT}.")


def _single_file_reason(path: Path) -> str:
    """Why one file is not a usable CLIP (the towers its keys show)."""
    try:
        keys = _read_keys(path)
    except CheckpointError:
        return "a single file, not a CLIP folder."
    has_text = any(k.startswith(("text_model.", "transformer.", "token_embedding")) for k in keys)
    has_image = any(k.startswith(("vision_model.", "visual.")) for k in keys)
    if has_text and not has_image:
        return ("holds only a text tower (a Stable Diffusion text encoder such as clip_l): it has no image tower, "
                "so it cannot score images.")
    if has_image and not has_text:
        return "holds only an image tower (a CLIP vision model): it has no text tower, so it cannot read the text."
    return "a single file, not a CLIP folder (the configuration and tokenizer files are missing)."


def find_clip_models(roots: Sequence[PathLike], depth: int = 2) -> dict[str, Path]:
    """CLIP folders (either layout) under ``roots``, up to ``depth`` levels down: ``{label: folder}``,
    the label being the folder relative to its root (the first root wins on equal labels)."""
    found: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        level = [root]
        for _ in range(depth):
            nxt = []
            for folder in level:
                try:
                    children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    continue
                for child in children:
                    if (child / "config.json").is_file() or (child / "open_clip_config.json").is_file():
                        found.setdefault(child.relative_to(root).as_posix(), child)
                    else:
                        nxt.append(child)
            level = nxt
    return found


# ---------------------------------------------------------------------------------------------- reading


def _read_keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return list(f.keys())
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path.name}: cannot read this .safetensors file ({e}).") from None
    return list(_read_tensors(path))


def _read_tensors(path: Path) -> dict[str, Tensor]:
    from ..weights import read_checkpoint

    return read_checkpoint(path).tensors


def _weights(folder: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder.name}: no weights file ({' or '.join(names)}) in this CLIP folder.")


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path.parent.name}/{path.name}: cannot read it ({e}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.parent.name}/{path.name}: expected a JSON object.")
    return data


def _check_towers(folder: Path, keys: Sequence[str], image_prefixes: tuple, text_prefixes: tuple) -> None:
    has_image = any(k.startswith(image_prefixes) for k in keys)
    has_text = any(k.startswith(text_prefixes) for k in keys)
    missing = [name for name, ok in (("image", has_image), ("text", has_text)) if not ok]
    if missing:
        raise CheckpointError(f"{folder.name}: the CLIP weights have no {' and no '.join(missing)} tower. Text "
                              f"editing needs both towers: {CLIP_HINT}.")


def _load_state(module: nn.Module, tensors: dict[str, Tensor], folder: Path) -> None:
    try:
        result = module.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{folder.name}: the weights do not fit the configuration ({str(e)[:300]}).") from None
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing:
        raise CheckpointError(f"{folder.name}: the weights file lacks {len(missing)} entries of the model "
                              f"(e.g. {', '.join(missing[:3])}): the download is incomplete or of another model.")


def _load_transformers(folder: Path) -> TransformersClip:
    try:
        import transformers
    except ImportError as exc:
        raise PackageMissingError(f"reading a Hugging Face CLIP needs the 'transformers' package ({exc}); it comes "
                                  f"with ComfyUI, or: pip install transformers") from exc
    config = _json(folder / "config.json")
    kind = config.get("model_type")
    if kind == "clip_text_model":
        raise CheckpointError(f"{folder.name}: a CLIP text model only (no image tower, as the text encoders of "
                              f"Stable Diffusion). Text editing needs both towers: {CLIP_HINT}.")
    if kind == "clip_vision_model":
        raise CheckpointError(f"{folder.name}: a CLIP vision model only (no text tower). Text editing needs both "
                              f"towers: {CLIP_HINT}.")
    if kind != "clip":
        raise CheckpointError(f"{folder.name}: model_type {kind!r} in config.json; only CLIP models "
                              f"(model_type 'clip') are supported. Put {CLIP_HINT}.")
    for tower, key in (("text", "text_config"), ("image", "vision_config")):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{folder.name}: config.json has no {key}: the {tower} tower is missing. {CLIP_HINT}.")
    weights = _weights(folder, HF_WEIGHTS)
    tensors = _read_tensors(weights)
    _check_towers(folder, list(tensors), ("vision_model.", "visual_projection."), ("text_model.", "text_projection."))
    if not ((folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file() and
                                                      (folder / "merges.txt").is_file())):
        raise CheckpointError(f"{folder.name}: the text tower's tokenizer files are missing (tokenizer.json, or "
                              f"vocab.json and merges.txt): copy them from the model's repository.")
    cfg = transformers.CLIPConfig.from_dict(config)
    model = transformers.CLIPModel(cfg)
    _load_state(model, tensors, folder)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    pre = _json(folder / "preprocessor_config.json") if (folder / "preprocessor_config.json").is_file() else {}
    mean, std = tuple(pre.get("image_mean", CLIP_MEAN)), tuple(pre.get("image_std", CLIP_STD))
    ctx = int(cfg.text_config.max_position_embeddings)
    return TransformersClip(model, tokenizer, cfg.vision_config.image_size, mean, std, ctx, str(folder))


def _load_open_clip(folder: Path) -> OpenClip:
    try:
        import open_clip
    except ImportError as exc:
        raise PackageMissingError(f"{folder.name} is an open_clip model; reading it needs the 'open_clip_torch' "
                                  f"package ({exc}): pip install open_clip_torch, or use the Hugging Face "
                                  f"transformers layout of the same CLIP.") from exc
    config = _json(folder / "open_clip_config.json")
    cfg = dict(config.get("model_cfg") or {})
    if not isinstance(cfg.get("vision_cfg"), dict) or not isinstance(cfg.get("text_cfg"), dict):
        raise CheckpointError(f"{folder.name}: open_clip_config.json has no model_cfg with vision_cfg and text_cfg "
                              f"(both towers are needed). {CLIP_HINT}.")
    text_cfg = cfg["text_cfg"]
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise CheckpointError(f"{folder.name}: its text tower is a Hugging Face model that open_clip would "
                              f"download; use a CLIP with open_clip's own text tower, or the transformers layout.")
    tensors = _read_tensors(_weights(folder, OPEN_CLIP_WEIGHTS))
    _check_towers(folder, list(tensors), ("visual.",), ("transformer.", "token_embedding", "text."))
    custom = bool(cfg.pop("custom_text", False))
    model = (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)
    _load_state(model, tensors, folder)
    pre = config.get("preprocess_cfg") or {}
    size = pre.get("size", cfg["vision_cfg"].get("image_size", 224))
    size = size[0] if isinstance(size, (list, tuple)) else size
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(text_cfg.get("context_length", 77)))
    return OpenClip(model, tokenizer, int(size), tuple(pre.get("mean", CLIP_MEAN)), tuple(pre.get("std", CLIP_STD)),
                    str(folder))


def load_clip(path: PathLike, device: DeviceLike = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """A frozen full CLIP from a local folder (transformers or open_clip layout) on ``device``.

    The weights are made outside inference mode (gradients flow to the images through them) and
    never require gradients themselves. Checks both towers and that their embeddings share one size.

    Raises:
        CheckpointError: not a CLIP folder, a tower or the tokenizer missing, incomplete weights.
        PackageMissingError: ``transformers`` or ``open_clip_torch`` not installed.
    """
    folder = Path(path)
    kind = detect_format(folder)
    device = torch.device(device)
    with torch.inference_mode(False):
        clip = (_load_open_clip if kind == "open_clip" else _load_transformers)(folder)
        clip.model.to(device=device, dtype=dtype)
        clip.to(device)
        clip.eval().requires_grad_(False)
        with torch.no_grad():  # one look at both towers: the joint space must be one
            e_img = clip.encode_image(torch.full((1, 3, clip.image_size, clip.image_size), 0.5, device=device))
            e_txt = clip.encode_text(["a face"])
    check_embeddings(e_img, e_txt, folder.name)
    logger.info("VToonify: CLIP %s (%s) loaded, %d-D embeddings", folder.name, kind, e_img.shape[-1])
    return clip


def check_embeddings(image: Tensor, text: Tensor, name: str = "clip") -> None:
    """Both towers' embeddings: ``[B, D]`` with one ``D``, finite.

    Raises:
        CheckpointError: sizes differ (towers of different models) or values are not finite.
    """
    if image.ndim != 2 or text.ndim != 2:
        raise CheckpointError(f"{name}: CLIP embeddings must be [B, D], got image {tuple(image.shape)} and text "
                              f"{tuple(text.shape)}.")
    if image.shape[-1] != text.shape[-1]:
        raise CheckpointError(f"{name}: the image embeddings have {image.shape[-1]} values and the text embeddings "
                              f"{text.shape[-1]}: the two towers are not of one CLIP model.")
    for what, e in (("image", image), ("text", text)):
        if not torch.isfinite(e).all():
            raise CheckpointError(f"{name}: the {what} tower gives non-finite embeddings (NaN or infinity): the "
                                  f"weights are damaged, or the precision is too low (load it in float32).")


def clip_label(clip: object) -> Optional[str]:
    """The folder a loaded CLIP came from (``None`` for other objects)."""
    return getattr(clip, "source", None) or None
