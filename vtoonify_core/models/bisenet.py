"""The BiSeNet face parser (ResNet-18 context path, 19 classes) of the official VToonify release.

Details: docs/design.md, ``vtoonify_core/models/bisenet.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..types import N_CLASSES
from ..weights import check_finite, expect_kind, load_into, read_checkpoint

PathLike = Union[str, Path]



# ----------------------------------------------------------------------------------------------
# helpers


def _global_avg(x: Tensor) -> Tensor:
    """``F.avg_pool2d(x, x.size()[2:])`` as in the official code: (B,C,H,W) -> (B,C,1,1).

    In fp16/bf16 the average is taken in fp32 and cast back (a sum over the whole map is where
    reduced precision loses most).
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        return F.avg_pool2d(x.float(), x.shape[2:]).to(x.dtype)
    return F.avg_pool2d(x, x.shape[2:])


# ----------------------------------------------------------------------------------------------
# ResNet-18 trunk (official model/bisenet/resnet.py)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))``.

    Shapes: (B, in_chan, H, W) -> (B, out_chan, ceil(H/stride), ceil(W/stride)).
    ``downsample`` (1x1 conv with stride + BN) exists when the channels or the stride change.
    """

    def __init__(self, in_chan: int, out_chan: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_chan, out_chan, stride)
        self.bn1 = nn.BatchNorm2d(out_chan)
        self.conv2 = conv3x3(out_chan, out_chan)
        self.bn2 = nn.BatchNorm2d(out_chan)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if in_chan != out_chan or stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chan, out_chan, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chan),
            )

    def forward(self, x: Tensor) -> Tensor:
        residual = F.relu(self.bn1(self.conv1(x)))
        residual = self.bn2(self.conv2(residual))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + residual)


def create_layer_basic(in_chan: int, out_chan: int, bnum: int, stride: int = 1) -> nn.Sequential:
    """A ResNet stage of ``bnum`` basic blocks, the first one with ``stride``."""
    layers = [BasicBlock(in_chan, out_chan, stride=stride)]
    for _ in range(bnum - 1):
        layers.append(BasicBlock(out_chan, out_chan, stride=1))
    return nn.Sequential(*layers)


class Resnet18(nn.Module):
    """The ResNet-18 trunk without its classifier.

    forward: (B, 3, H, W) -> (feat8 (B,128,H/8,W/8), feat16 (B,256,H/16,W/16),
    feat32 (B,512,H/32,W/32)), each spatial size rounded up at every stride-2 step.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = create_layer_basic(64, 64, bnum=2, stride=1)
        self.layer2 = create_layer_basic(64, 128, bnum=2, stride=2)
        self.layer3 = create_layer_basic(128, 256, bnum=2, stride=2)
        self.layer4 = create_layer_basic(256, 512, bnum=2, stride=2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        x = self.layer1(x)
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


# ----------------------------------------------------------------------------------------------
# BiSeNet head (official model/bisenet/model.py)


class ConvBNReLU(nn.Module):
    """``relu(bn(conv(x)))``, conv without bias. (B, in_chan, H, W) -> (B, out_chan, H', W')."""

    def __init__(self, in_chan: int, out_chan: int, ks: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chan, out_chan, kernel_size=ks, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chan)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class BiSeNetOutput(nn.Module):
    """Classifier head: ConvBNReLU 3x3 then a 1x1 conv to ``n_classes`` (no bias).

    (B, in_chan, H, W) -> (B, n_classes, H, W).
    """

    def __init__(self, in_chan: int, mid_chan: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_chan, mid_chan, ks=3, stride=1, padding=1)
        self.conv_out = nn.Conv2d(mid_chan, n_classes, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.conv(x))


class AttentionRefinementModule(nn.Module):
    """ARM: ``feat * sigmoid(bn_atten(conv_atten(avg(feat))))`` with ``feat = conv(x)``.

    (B, in_chan, H, W) -> (B, out_chan, H, W).
    """

    def __init__(self, in_chan: int, out_chan: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_chan, out_chan, ks=3, stride=1, padding=1)
        self.conv_atten = nn.Conv2d(out_chan, out_chan, kernel_size=1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_chan)
        self.sigmoid_atten = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv(x)
        atten = _global_avg(feat)
        atten = self.sigmoid_atten(self.bn_atten(self.conv_atten(atten)))
        return torch.mul(feat, atten)


class ContextPath(nn.Module):
    """ResNet-18 plus global context and two ARMs.

    forward: (B, 3, H, W) -> (feat8 (B,128,H8,W8), feat16_up (B,128,H8,W8), feat32_up (B,128,H16,W16))
    where H8, H16, H32 are the trunk's 1/8, 1/16, 1/32 sizes. The up-sampling is nearest to the
    explicit size of the finer map, as in the official code.
    """

    def __init__(self) -> None:
        super().__init__()
        self.resnet = Resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, ks=3, stride=1, padding=1)
        self.conv_head16 = ConvBNReLU(128, 128, ks=3, stride=1, padding=1)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, stride=1, padding=0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        h8, w8 = feat8.shape[2:]
        h16, w16 = feat16.shape[2:]
        h32, w32 = feat32.shape[2:]

        avg = self.conv_avg(_global_avg(feat32))
        avg_up = F.interpolate(avg, (h32, w32), mode="nearest")

        feat32_sum = self.arm32(feat32) + avg_up
        feat32_up = F.interpolate(feat32_sum, (h16, w16), mode="nearest")
        feat32_up = self.conv_head32(feat32_up)

        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = F.interpolate(feat16_sum, (h8, w8), mode="nearest")
        feat16_up = self.conv_head16(feat16_up)

        return feat8, feat16_up, feat32_up


class FeatureFusionModule(nn.Module):
    """FFM: ``feat + feat * sigmoid(conv2(relu(conv1(avg(feat)))))``, ``feat = convblk(cat(fsp, fcp))``.

    (B, Csp, H, W), (B, Ccp, H, W) with Csp + Ccp = in_chan -> (B, out_chan, H, W).
    """

    def __init__(self, in_chan: int, out_chan: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_chan, out_chan, ks=1, stride=1, padding=0)
        self.conv1 = nn.Conv2d(out_chan, out_chan // 4, kernel_size=1, stride=1, padding=0, bias=False)
        self.conv2 = nn.Conv2d(out_chan // 4, out_chan, kernel_size=1, stride=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.sigmoid = nn.Sigmoid()

    def forward(self, fsp: Tensor, fcp: Tensor) -> Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = _global_avg(feat)
        atten = self.sigmoid(self.conv2(self.relu(self.conv1(atten))))
        return torch.mul(feat, atten) + feat


class BiSeNet(nn.Module):
    """The official face-parsing BiSeNet (the spatial path replaced by the ResNet 1/8 feature).

    forward: (B, 3, H, W) -> (feat_out, feat_out16, feat_out32), each (B, n_classes, H, W) logits,
    up-sampled from 1/8 (``feat_out``, ``feat_out16``) and 1/16 (``feat_out32``) resolution with
    bilinear ``align_corners=True``. The official pipeline feeds images in [-2, 2] (``2 * x`` for
    x in [-1, 1]) and uses ``feat_out`` only.
    """

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h, w = x.shape[2:]
        feat_res8, feat_cp8, feat_cp16 = self.cp(x)
        feat_fuse = self.ffm(feat_res8, feat_cp8)

        feat_out = self.conv_out(feat_fuse)
        feat_out16 = self.conv_out16(feat_cp8)
        feat_out32 = self.conv_out32(feat_cp16)

        feat_out = F.interpolate(feat_out, (h, w), mode="bilinear", align_corners=True)
        feat_out16 = F.interpolate(feat_out16, (h, w), mode="bilinear", align_corners=True)
        feat_out32 = F.interpolate(feat_out32, (h, w), mode="bilinear", align_corners=True)
        return feat_out, feat_out16, feat_out32

    def forward_main(self, x: Tensor) -> Tensor:
        """The first output of :meth:`forward` only, (B, 3, H, W) -> (B, n_classes, H, W).

        Same numbers as ``forward(x)[0]``; the auxiliary heads are skipped.
        """
        h, w = x.shape[2:]
        feat_res8, feat_cp8, _ = self.cp(x)
        feat_out = self.conv_out(self.ffm(feat_res8, feat_cp8))
        return F.interpolate(feat_out, (h, w), mode="bilinear", align_corners=True)


class FaceParser(BiSeNet):
    """A :class:`BiSeNet` whose ``forward`` returns the first output only.

    forward: (B, 3, H, W) -> (B, 19, H, W) logits (``BiSeNet.forward(x)[0]``). The state-dict
    keys are exactly the official ones; :meth:`forward_all` gives the three official outputs.
    """

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.forward_main(x)

    def forward_all(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The official three outputs, see :meth:`BiSeNet.forward`."""
        return BiSeNet.forward(self, x)


# ----------------------------------------------------------------------------------------------
# public API


def load_face_parser(
    path: PathLike, device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32
) -> FaceParser:
    """Load the official ``faceparsing.pth`` (or a ``.safetensors`` conversion of it).

    The file is read without unpickling code, checked to be a BiSeNet face parser with finite
    weights and loaded with strict key and shape checks. The parser is returned in eval mode
    (BatchNorm uses the running statistics) on ``device`` in ``dtype``; gradients are not
    disabled, the caller wraps calls in ``torch.no_grad()``.

    Raises:
        CheckpointError: missing, unreadable, wrong-kind, corrupt or non-fitting file.
    """
    ckpt = read_checkpoint(path)
    expect_kind(ckpt, "bisenet")
    check_finite(ckpt.tensors, ckpt.path)
    parser = FaceParser(n_classes=N_CLASSES)
    load_into(parser, ckpt.tensors, ckpt.path, "BiSeNet face parser")
    parser.eval()
    return parser.to(device=device, dtype=dtype)


def parse_frames(parser: nn.Module, x: Tensor) -> Tensor:
    """The official VToonify parsing of frames: (B, 3, H, W) in [-1, 1] -> (B, 19, H, W) logits.

    As in the official ``style_transfer.py``: the frames are up-sampled 2x (bilinear,
    ``align_corners=False``), scaled to [-2, 2] and parsed; the (B, 19, 2H, 2W) logits are then
    down-sampled by nearest with scale 0.5, which picks the even rows and columns. Raw logits are
    returned (no softmax); VToonify divides them by 16 before concatenating them with the frame.

    ``parser`` is a :class:`FaceParser` (or any module mapping (B,3,h,w) to (B,19,h,w)). Any H, W
    work. ``x`` is cast to the parser's dtype (not moved between devices); the result is
    contiguous, in the parser's dtype.
    """
    p = next(parser.parameters(), None)
    if p is not None and x.dtype != p.dtype:
        x = x.to(p.dtype)
    up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    logits = parser(2 * up)
    return logits[..., ::2, ::2].contiguous()
