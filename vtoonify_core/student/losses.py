"""Losses of the student: L1 plus a multi-scale gradient term (Stage I), an optional VGG-16
perceptual term from local weights, the paper's warp loss (Eq. 2: the flow-warped previous output
where the parsing says background, ``G(x_t)`` elsewhere) and temporal loss (Eq. 3)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError
from ..temporal.flow import backward_warp
from ..types import PathLike
from ..weights import load_into, read_checkpoint

#: BiSeNet class 0 is the background; 16 cloth, 18 hat are treated as background too (they move
#: rigidly with the body, like the backdrop with the camera)
BACKGROUND_CLASSES = (0, 16)


def _gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def reconstruction_loss(y: Tensor, target: Tensor, scales: int = 3, gradient_weight: float = 1.0) -> Tensor:
    """L1 at full resolution plus, at ``scales`` resolutions (halved each time), the L1 of the
    horizontal and vertical image gradients (edges and flat cartoon regions both count)."""
    loss = (y - target).abs().mean()
    a, b = y, target
    for s in range(scales):
        if s:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        (ax, ay), (bx, by) = _gradients(a), _gradients(b)
        loss = loss + gradient_weight / scales * ((ax - bx).abs().mean() + (ay - by).abs().mean())
    return loss


# ---------------------------------------------------------------------------------------------- perceptual

#: VGG-16 ``features`` up to relu3_3, in torchvision's layer numbering (its checkpoint keys)
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256)
_VGG_TAPS = (3, 8, 15)  # relu1_2, relu2_2, relu3_3


class VGGPerceptual(nn.Module):
    """The L1 between VGG-16 features (relu1_2, relu2_2, relu3_3) of two images in [-1, 1].

    Built from a local torchvision ``vgg16`` state dict (``features.N.weight``; e.g.
    ``vgg16-397923af.pth``); nothing is downloaded.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def forward(self, y: Tensor, target: Tensor) -> Tensor:
        a = ((y + 1) * 0.5 - self.mean) / self.std
        b = ((target + 1) * 0.5 - self.mean) / self.std
        loss = y.new_zeros(())
        for i, layer in enumerate(self.features):
            a, b = layer(a), layer(b)
            if i in _VGG_TAPS:
                loss = loss + (a - b).abs().mean()
        return loss


def load_vgg(path: PathLike, device: torch.device, dtype: torch.dtype = torch.float32) -> VGGPerceptual:
    """:class:`VGGPerceptual` from a local VGG-16 checkpoint (only the layers up to relu3_3 are read).

    Raises:
        CheckpointError: the file is missing, unreadable or not a torchvision VGG-16.
    """
    ckpt = read_checkpoint(path)
    net = VGGPerceptual()
    wanted = set(net.state_dict())
    tensors = {k: v for k, v in ckpt.tensors.items() if k in wanted}
    if not tensors:
        raise CheckpointError(f"{path}: not a torchvision VGG-16 checkpoint (no features.N.weight keys); give the "
                              f"file of torchvision's vgg16 (vgg16-397923af.pth) or leave vgg empty.")
    load_into(net, tensors, path, "VGG-16 perceptual network")
    return net.to(device, dtype).eval()


# ---------------------------------------------------------------------------------------------- video terms


def background_mask(logits: Tensor) -> Tensor:
    """``[T, 1, H, W]`` in [0, 1]: BiSeNet's probability of the background classes
    (:data:`BACKGROUND_CLASSES`) from logits ``[T, 19, H, W]``."""
    prob = torch.softmax(logits.float(), dim=1)
    return prob[:, list(BACKGROUND_CLASSES)].sum(1, keepdim=True).clamp_(0.0, 1.0)


def warp_target(prev: Tensor, g_t: Tensor, flow: Tensor, valid: Tensor, background: Tensor) -> tuple[Tensor, Tensor]:
    """The paper's Eq. 2 target and the warped previous output.

    ``target = M * W(prev) + (1 - M) * G(x_t)`` with ``M`` the background mask times the
    flow's validity (in-image, forward-backward consistent), ``W`` the backward warp along the
    flow ``t -> t-1`` (all at the output resolution).
    """
    warped, inside = backward_warp(prev, flow)
    m = background * valid * inside.to(prev.dtype)
    return m * warped + (1.0 - m) * g_t, warped


def warp_loss(y_t: Tensor, prev: Tensor, g_t: Tensor, flow: Tensor, valid: Tensor,
              background: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 2 (``|R_t - target|``, target detached) and Eq. 3 (``valid * |R_t - W(R_{t-1})|``)."""
    target, warped = warp_target(prev, g_t, flow, valid, background)
    l_warp = (y_t - target.detach()).abs().mean()
    l_temp = (valid * (y_t - warped).abs()).mean()
    return l_warp, l_temp


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two clips in [-1, 1] (peak 1 after mapping both to [0, 1])."""
    mse = ((a.float() - b.float()) * 0.5).square().mean().item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def ssim(a: Tensor, b: Tensor, window: int = 7) -> float:
    """Mean SSIM of two clips ``[T, 3, H, W]`` in [-1, 1] (uniform window, on [0, 1] values)."""
    x, y = (a.float() + 1) * 0.5, (b.float() + 1) * 0.5
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pool = lambda t: F.avg_pool2d(t, window, 1)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx * mx, pool(y * y) - my * my, pool(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def maybe_vgg(path: Optional[PathLike], device: torch.device) -> Optional[VGGPerceptual]:
    """The perceptual network when ``path`` is given, else ``None``."""
    return None if not path else load_vgg(path, device)
