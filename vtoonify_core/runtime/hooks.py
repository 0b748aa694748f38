"""One object for what a caller hooks into a long run: progress, interruption, out-of-memory
back-off and where results go. Hosts (the ComfyUI nodes, the command line) build one and pass
``**hooks.kwargs()`` to the pipeline, instead of threading each callback by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from ..types import DeviceLike, Progress


@dataclass(frozen=True)
class RunHooks:
    """Callbacks of a chunked run (all optional).

    Attributes:
        progress: ``progress(done, total)`` after each chunk.
        check_interrupt: called before each chunk; raises to stop the run.
        on_oom: ``on_oom(new_chunk_size)`` after an out-of-memory error halved the chunk.
        output_device: where results are gathered (``None``: the pipeline's default).
    """

    progress: Optional[Progress] = None
    check_interrupt: Optional[Callable[[], None]] = None
    on_oom: Optional[Callable[[int], None]] = None
    output_device: Optional[DeviceLike] = None

    def kwargs(self, *, output: bool = True, oom: bool = True) -> dict[str, Any]:
        """Keyword arguments for the pipeline's functions: ``output=False`` leaves ``output_device``
        out (functions that do not gather results, e.g. ``stylize_video``), ``oom=False`` leaves
        ``on_oom`` out (functions without the out-of-memory back-off, e.g. ``smooth_clip``)."""
        out: dict[str, Any] = {"progress": self.progress, "check_interrupt": self.check_interrupt}
        if oom:
            out["on_oom"] = self.on_oom
        if output and self.output_device is not None:
            out["output_device"] = self.output_device
        return out

    def with_progress(self, progress: Optional[Progress]) -> "RunHooks":
        """The same hooks with another progress callback (e.g. one stage of a longer run)."""
        return replace(self, progress=progress)
