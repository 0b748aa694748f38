"""Teachers for the student: VToonify itself (a model bundle, a style code and a style degree, the
frames parsed inside), or any callable ``[B, 3, H, W] -> [B, 3, 4H, 4W]`` in [-1, 1]."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..models.bundle import FaceParserModel, VToonifyModel
from ..pipeline.stylize import stylize
from ..styles.codes import check_style
from ..types import StyleCode


class VToonifyTeacher:
    """``teacher(frames) -> [B, 3, 4H, 4W]`` in [-1, 1]: :func:`~vtoonify_core.pipeline.stylize`
    with one style code and degree (BiSeNet parsing computed inside), on the model's device.

    ``face_parser`` is the bundle's parser: training uses it for the background mask of the
    warp loss.
    """

    def __init__(self, model: VToonifyModel, style: StyleCode, style_degree: float = 0.5, batch_size: int = 4) -> None:
        check_style(model, style)
        self.model, self.style, self.style_degree, self.batch_size = model, style, float(style_degree), batch_size

    @property
    def face_parser(self) -> Optional[FaceParserModel]:
        return self.model.face_parser

    def describe(self) -> str:
        return f"{self.model.kind}, style degree {self.style_degree:g}"

    def __call__(self, frames: Tensor) -> Tensor:
        out = stylize(self.model, frames, self.style, self.style_degree, batch_size=self.batch_size,
                      output_device=frames.device)
        return out.to(frames.dtype) if frames.is_floating_point() else out


def vtoonify_teacher(model: VToonifyModel, style: StyleCode, style_degree: float = 0.5,
                     batch_size: int = 4) -> VToonifyTeacher:
    """A teacher from a VToonify bundle, a style code (from the same model) and a style degree."""
    return VToonifyTeacher(model, style, style_degree, batch_size)


def teacher_parser(teacher, parser: Optional[FaceParserModel] = None) -> Optional[FaceParserModel]:
    """The parser for the warp loss: ``parser`` if given, else the teacher's ``face_parser`` if it has one."""
    if parser is not None:
        return parser
    found = getattr(teacher, "face_parser", None)
    return found if isinstance(found, FaceParserModel) else None

