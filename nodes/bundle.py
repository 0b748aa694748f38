"""The model bundles the nodes pass along (VTOONIFY_MODEL, FACE_PARSER), owning their ComfyUI model patchers.

As ComfyUI's own ``ClipVisionModel`` holds ``self.patcher`` and asks ``load_model_gpu`` for it
before it runs, a bundle holds one patcher per network (``None`` where ComfyUI does not manage
the device, e.g. the CPU) and :meth:`ComfyVToonifyModel.load` asks ComfyUI's model management to
put the networks a node needs on the device. ComfyUI moves them back to the offload device when
other models need the memory, and accounts each network once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..vtoonify_core.models.bundle import FaceParserModel, VToonifyModel
from . import _comfy

#: the networks of a bundle, by the name of its field
PARTS = ("generator", "encoder", "parser")


@dataclass(frozen=True, eq=False)
class ComfyFaceParser(FaceParserModel):
    """The face parser with its ComfyUI patcher (``None``: not managed by ComfyUI)."""

    patcher: Any = None

    def load(self, memory_required: int = 0) -> None:
        """Ask ComfyUI to put the parser on its device before it runs."""
        _comfy.load_patchers([self.patcher], memory_required)


@dataclass(frozen=True, eq=False)
class ComfyVToonifyModel(VToonifyModel):
    """The core bundle with a ComfyUI patcher per network (``patchers``: part -> patcher or ``None``).

    A patcher belongs to the network in the same field: a bundle with another network in a field
    must carry that network's patcher too (see :meth:`with_generator`).
    """

    patchers: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: VToonifyModel) -> "ComfyVToonifyModel":
        """``model`` itself, or a plain core bundle with no patchers (its networks are already where
        they run, as the core bundle promises)."""
        if isinstance(model, cls):
            return model
        return cls(**{f.name: getattr(model, f.name) for f in dataclasses.fields(VToonifyModel)})

    @property
    def face_parser(self) -> ComfyFaceParser:
        return ComfyFaceParser(self.parser, self.device, self.dtype, self.patchers.get("parser"))

    def load(self, *parts: str, memory_required: int = 0) -> None:
        """Ask ComfyUI to put these networks (``'generator'``, ``'encoder'``, ``'parser'``) on the
        device before they run, with ``memory_required`` bytes free besides them."""
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown network(s) {sorted(unknown)}; a bundle has {', '.join(PARTS)}.")
        _comfy.load_patchers([self.patchers.get(p) for p in parts], memory_required)

    def with_generator(self, generator) -> "ComfyVToonifyModel":
        """This bundle with ``generator``, a shallow copy of this one's generator (same parameters and
        submodules, its own settings).

        The copy gets a clone of this generator's patcher: ComfyUI loads the shared weights through
        it, knows it for a clone (one entry, accounted once), and when it moves the weights off the
        device the copy's own device tensors (baked weights, compiled bodies) are dropped as well.
        """
        patcher = self.patchers.get("generator")
        clone = None if patcher is None else _comfy.clone_patcher(patcher, on_unload=generator.clear_bake_cache)
        return dataclasses.replace(self, generator=generator, patchers={**self.patchers, "generator": clone})
