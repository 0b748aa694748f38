"""The only place that talks to ComfyUI: its modules, tensor layouts, progress and errors.

ComfyUI modules are imported when first needed, so this package can be imported (and its core
used) outside ComfyUI. Layouts at the node boundary:

* ComfyUI IMAGE: ``[B, H, W, C]`` float in [0, 1] (C = 3; 1 or 4 accepted);
* ComfyUI MASK: ``[B, H, W]`` float in [0, 1];
* core frames: ``[B, 3, H, W]`` (a view of the IMAGE, declared with ``input_range=(0, 1)``).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Mapping, Optional

import torch

logger = logging.getLogger("vtoonify")

#: Range of ComfyUI IMAGE values, passed to the core as ``input_range``.
IMAGE_RANGE = (0.0, 1.0)


def model_management():
    import comfy.model_management as mm

    return mm


def folder_paths():
    import folder_paths as fp

    return fp


# ---------------------------------------------------------------------------------------------- errors


@contextlib.contextmanager
def node_errors(display_name: str, hide: Optional[Mapping[str, str]] = None) -> Iterator[None]:
    """Prefix the message of user-facing errors with the node's display name.

    ``ValueError`` (bad input, wrong or corrupt checkpoint, no face), ``FileNotFoundError``
    (missing model) and ``ImportError`` (missing optional package) keep their type and traceback;
    interruption, out-of-memory and other errors pass untouched. ``hide``: text to replace in
    those messages (e.g. a file's real path on the server -> the name the prompt gave), read when
    the error passes, so a node can fill it as it goes.
    """
    try:
        yield
    except (ValueError, FileNotFoundError, ImportError) as exc:
        msg = str(exc)
        for text, shown in sorted((hide or {}).items(), key=lambda kv: -len(kv[0])):
            if text:
                msg = msg.replace(text, shown)
        new = msg if msg.startswith(display_name) else f"{display_name}: {msg}"
        if new != str(exc):
            if isinstance(exc, OSError) and exc.errno is not None:  # its text comes from errno and filename
                raise type(exc)(new).with_traceback(exc.__traceback__) from None
            exc.args = (new,) + tuple(exc.args[1:])
            if isinstance(exc, ImportError):
                exc.msg = new
        raise


# ---------------------------------------------------------------------------------------------- tensors


def image_to_frames(image: torch.Tensor, input_name: str = "images") -> torch.Tensor:
    """ComfyUI IMAGE ``[B, H, W, C]`` -> core frames ``[B, 3, H, W]`` (a view where possible, range [0, 1])."""
    from ..vtoonify_core.errors import InputError

    if not isinstance(image, torch.Tensor):
        raise InputError(input_name, f"expected an IMAGE tensor, got {type(image).__name__}.")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise InputError(input_name, f"expected an IMAGE [B, H, W, 3], got shape {tuple(image.shape)}.")
    if not image.is_floating_point():
        image = image.float() / 255.0
    if image.shape[-1] == 4:
        image = image[..., :3]
    elif image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return image.permute(0, 3, 1, 2)


def image_to_uint8(image: torch.Tensor, index: int = 0):
    """One image of an IMAGE batch as an ``(H, W, 3)`` uint8 RGB numpy array."""
    x = image_to_frames(image, "image")[index]
    return (x.float() * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def output_device() -> torch.device:
    return model_management().intermediate_device()


def output_dtype() -> torch.dtype:
    fn = getattr(model_management(), "intermediate_dtype", None)
    return fn() if callable(fn) else torch.float32


def unit_to_image(x: torch.Tensor) -> torch.Tensor:
    """Core ``[B, 3, H, W]`` in [0, 1] -> IMAGE ``[B, H, W, 3]`` on the intermediate device."""
    return x.permute(0, 2, 3, 1).to(output_device(), output_dtype()).contiguous()


def signed_to_image(x: torch.Tensor) -> torch.Tensor:
    """Core ``[B, 3, H, W]`` in [-1, 1] -> IMAGE ``[B, H, W, 3]`` in [0, 1]."""
    return unit_to_image(((x.float() + 1.0) * 0.5).clamp_(0.0, 1.0))


def uint8_to_image(arr) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> IMAGE ``[1, H, W, 3]``."""
    t = torch.from_numpy(arr.copy()).float().div_(255.0)[None]
    return t.to(output_device(), output_dtype())


def to_mask(x: torch.Tensor) -> torch.Tensor:
    """Core ``[B, H, W]`` in [0, 1] -> MASK on the intermediate device."""
    return x.to(output_device(), torch.float32).contiguous()


# ---------------------------------------------------------------------------------------------- run-time hooks


#: Longest side of node previews (pixels) where ComfyUI has no ``--preview-size``.
PREVIEW_SIZE = 512


def previews_enabled() -> bool:
    """Whether ComfyUI sends previews for the prompt that is running: its preview method is not
    ``none``. That is the server's ``--preview-method`` (default ``none``), or the one the prompt
    asks for (the frontend's preview setting, ``extra_data.preview_method``), which ComfyUI sets
    in ``comfy.cli_args.args`` before each prompt, as its samplers read it. A ComfyUI without
    that setting shows them."""
    try:
        from comfy.cli_args import LatentPreviewMethod, args
    except ImportError:
        return True
    method = getattr(args, "preview_method", None)
    none = getattr(LatentPreviewMethod, "NoPreviews", None)
    return method is None or none is None or method != none


def preview_size() -> int:
    """Longest side of previews: ComfyUI's ``--preview-size`` (:data:`PREVIEW_SIZE` without it)."""
    try:
        from comfy.cli_args import args

        return int(getattr(args, "preview_size", PREVIEW_SIZE) or PREVIEW_SIZE)
    except (ImportError, TypeError, ValueError):
        return PREVIEW_SIZE


def progress(total: int) -> Callable[..., None]:
    """A ``progress(done, total, preview=None)`` callback driving a ComfyUI progress bar.

    ``preview`` (an image, see :func:`preview_image`) is shown on the node and stays there after
    the run (ComfyUI's progress preview, as samplers show their latents), when previews are on
    (:func:`previews_enabled`, asked once per bar); otherwise only the progress is sent.
    """
    from comfy.utils import ProgressBar

    bar = ProgressBar(total)
    show = previews_enabled()

    def update(done: int, tot: int, preview=None) -> None:
        bar.update_absolute(done, tot, preview_image(preview) if show and preview is not None else None)

    return update


def run_hooks(total: Optional[int] = None, preview: Optional[Callable[[], Any]] = None):
    """The core's :class:`~vtoonify_core.runtime.RunHooks` for one node run, driven by ComfyUI.

    * ``progress``: a progress bar of ``total`` steps (``None``: sized by the first update, for runs
      that learn their length as they start); ``preview()``, when given, is asked at every update
      for an image to show on the node (``None``: keep the last one), only when previews are on
      (:func:`previews_enabled`);
    * ``check_interrupt``: ComfyUI's Cancel button;
    * ``on_oom``: give cached allocator blocks back after an out-of-memory error;
    * ``output_device``: ComfyUI's intermediate device.

    Pass ``**hooks.kwargs()`` to the core function.
    """
    from ..vtoonify_core.runtime.hooks import RunHooks

    bar = progress(total) if total is not None else None
    if not previews_enabled():  # not even asked for: no frame is copied for a preview nobody sees
        preview = None

    def update(done: int, tot: int) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(tot)
        bar(done, tot, preview() if preview is not None else None)

    return RunHooks(progress=update, check_interrupt=check_interrupt, on_oom=on_oom, output_device=output_device())


def preview_image(image):
    """An image for ComfyUI's progress preview: ``("JPEG", PIL image, max size)``.

    ``image``: ``(H, W, 3)`` uint8 array, or an ``[H, W, 3]`` / ``[1, H, W, 3]`` float tensor in [0, 1].
    """
    import numpy as np
    from PIL import Image

    if isinstance(image, torch.Tensor):
        t = image[0] if image.ndim == 4 else image
        image = (t.detach().float().clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8).cpu().numpy()
    return ("JPEG", Image.fromarray(np.ascontiguousarray(image)), preview_size())


def show_preview(image) -> None:
    """Show one image on the running node (kept until the node runs again) when previews are on;
    see :func:`preview_image`."""
    progress(1)(1, 1, image)


def check_interrupt() -> None:
    """Raise ComfyUI's interruption exception if the user pressed Cancel."""
    model_management().throw_exception_if_processing_interrupted()


def on_oom(new_size: int) -> None:
    """After an out-of-memory error: give cached allocator blocks back."""
    try:
        model_management().soft_empty_cache()
    except Exception:  # pragma: no cover - best effort
        logger.debug("soft_empty_cache failed", exc_info=True)


def resolve_device(choice: str) -> torch.device:
    """``auto`` (ComfyUI's device), ``cuda``, ``mps`` or ``cpu`` (the loader's list, which ComfyUI
    validates); refuses one this machine does not have."""
    from ..vtoonify_core.errors import InputError

    def cuda() -> torch.device:
        if not torch.cuda.is_available():
            raise InputError("device", "CUDA is not available in this ComfyUI (no NVIDIA GPU or a CPU-only PyTorch): "
                                       "choose auto or cpu.")
        dev = torch.device(model_management().get_torch_device())
        return dev if dev.type == "cuda" else torch.device("cuda")

    def mps() -> torch.device:
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            raise InputError("device", "Apple MPS is not available on this machine: choose auto or cpu.")
        return torch.device("mps")

    return {"auto": lambda: torch.device(model_management().get_torch_device()),
            "cpu": lambda: torch.device("cpu"), "cuda": cuda, "mps": mps}[choice]()


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto``: on CUDA what ComfyUI considers fast (bf16, else fp16, else fp32); elsewhere the
    core's choice (bf16 on AMX CPUs, else fp32); or the named precision."""
    from ..vtoonify_core.runtime.device import resolve_dtype as core_resolve

    if choice == "auto" and device.type == "cuda":
        mm = model_management()
        for name, dtype in (("should_use_bf16", torch.bfloat16), ("should_use_fp16", torch.float16)):
            fn = getattr(mm, name, None)
            try:
                if fn is not None and fn(device):
                    return dtype
            except Exception:  # pragma: no cover - older ComfyUI signatures
                continue
        return torch.float32
    return core_resolve(choice, device)


# ---------------------------------------------------------------------------------------------- model management


def managed_device(device: torch.device) -> bool:
    """Whether networks for ``device`` are held by ComfyUI's model management (an accelerator, in
    a ComfyUI with model patchers); on the CPU nothing moves, so nothing is managed."""
    if device.type == "cpu":
        return False
    try:
        import comfy.model_patcher as mp

        mm = model_management()
        return hasattr(mp, "ModelPatcher") and hasattr(mm, "load_models_gpu") and hasattr(mm, "unet_offload_device")
    except Exception:
        return False


def offload_device() -> torch.device:
    """Where ComfyUI keeps networks that are not in use (read there first, moved by ComfyUI)."""
    return torch.device(model_management().unet_offload_device())


def make_patcher(module: torch.nn.Module, device: torch.device):
    """A ComfyUI model patcher that loads ``module`` to ``device`` (``None`` if this ComfyUI's patcher
    cannot be built: the caller then places the network itself).

    ComfyUI moves the weights to ``device`` when a node asks for them (:func:`load_patchers`) and
    back to the offload device when other models need the memory.
    """
    try:
        import comfy.model_patcher as mp

        cls = getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher
        return cls(module, load_device=device, offload_device=offload_device())
    except Exception:  # older/newer ComfyUI without a usable patcher
        logger.debug("VToonify: no ComfyUI model patcher for %s", device, exc_info=True)
        return None


def clone_patcher(patcher, on_unload: Optional[Callable[[], None]] = None):
    """A clone of ``patcher`` (ComfyUI knows clones share their weights: it loads and accounts them
    once). ``on_unload()`` runs when ComfyUI moves the weights off the device through the clone."""
    clone = patcher.clone()
    if on_unload is not None:
        try:
            from comfy.patcher_extension import CallbacksMP

            clone.add_callback(CallbacksMP.ON_DETACH, lambda _patcher, unpatch_all=True: on_unload() if unpatch_all
                               else None)
        except (ImportError, AttributeError):  # a ComfyUI without patcher callbacks
            logger.debug("VToonify: no patcher callbacks in this ComfyUI", exc_info=True)
    return clone


def load_patchers(patchers, memory_required: int = 0) -> None:
    """Ask ComfyUI to put these patchers' networks on their device (``None`` entries: unmanaged
    networks, already where they run), freeing other models' memory as needed."""
    patchers = [p for p in patchers if p is not None]
    if not patchers:
        return
    mm = model_management()
    try:
        mm.load_models_gpu(patchers, memory_required=int(memory_required), force_full_load=True)
    except TypeError:  # ComfyUI without force_full_load
        mm.load_models_gpu(patchers, memory_required=int(memory_required))


def release_patcher(patcher) -> None:
    """Move a dropped network's weights back to the offload device (``patcher.detach()``). ComfyUI
    forgets its entry by itself once the network is garbage (its own weak references)."""
    if patcher is None:
        return
    try:
        patcher.detach()
    except Exception:  # pragma: no cover - best effort
        logger.debug("VToonify: could not release a model patcher", exc_info=True)
