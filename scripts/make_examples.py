"""Write the example inputs the pack ships in ``example_inputs/`` (copied into ComfyUI's input folder at load).

* ``vtoonify_example.png``: ``skimage.data.astronaut()`` (NASA, public domain) at 256x256;
* ``vtoonify_reference.png``: the same portrait mirrored with its colour channels rotated (a second
  face with other colours, for the style-from-a-reference templates);
* ``vtoonify_example_clip.mp4``: 8 frames (8 fps, 1 s) of a slow pan over the portrait, H.264 with a
  440 Hz AAC tone as its sound track.

Run ``python scripts/make_examples.py`` from the repository root; the files are small (a few hundred KB).
"""
from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZE = 256
CLIP_FRAMES = 8
CLIP_RATE = Fraction(8)
TONE_HZ = 440.0


def portrait(size: int = SIZE) -> np.ndarray:
    """``skimage.data.astronaut()`` resized to ``size`` x ``size`` (uint8 RGB)."""
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.LANCZOS))


def reference_portrait() -> np.ndarray:
    """The portrait mirrored with its colour channels rotated: another face, other colours."""
    return np.ascontiguousarray(portrait()[:, ::-1, [2, 0, 1]])


def clip_frames(n: int = CLIP_FRAMES) -> list[np.ndarray]:
    """``n`` frames of a slow pan over the portrait (2 px down and 2 px right per frame)."""
    big = portrait(SIZE + 2 * n)
    return [np.ascontiguousarray(big[2 * i:2 * i + SIZE, 2 * i:2 * i + SIZE]) for i in range(n)]


def main(out: Path = REPO / "example_inputs") -> None:
    from vtoonify_core.video.files import write_video

    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(portrait()).save(out / "vtoonify_example.png", optimize=True)
    Image.fromarray(reference_portrait()).save(out / "vtoonify_reference.png", optimize=True)
    write_video(out / "vtoonify_example_clip.mp4", clip_frames(), CLIP_RATE, options={"crf": "20", "preset": "slow"},
                tone_hz=TONE_HZ)
    for p in sorted(out.iterdir()):
        print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
