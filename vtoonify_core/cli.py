"""Command line of vtoonify_core.

Usage: :data:`USAGE` (shown by ``--help``).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import video
from .convert import convert
from .errors import CheckpointError, FaceBackendUnavailableError, InputError, NoFaceError, UsageError, VideoError
from .faces.base import CROP_ADVICE
from .models.bundle import load_model
from .official import (D_STYLES, DEFAULT_CHECKPOINT, DRIVE_ALL_URL, ENCODER_FILE, EXSTYLE_FILE, HF_TREE_URL,
                       PARSER_FILE, T_STYLES)
from .runtime.device import resolve_dtype
from .types import IMAGE_EXTENSIONS

#: Environment variable naming the model folder.
MODELS_ENV = "VTOONIFY_MODELS"
#: Default model folder (relative to the working directory).
DEFAULT_MODELS_DIR = Path("models") / "vtoonify"
#: Exit status of user errors.
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


#: What ``--help`` prints above the options.
USAGE = """Command line of vtoonify_core.

    python -m vtoonify_core convert SRC DST          # official checkpoint / exstyle_code.npy -> .safetensors
    python -m vtoonify_core stylize IN OUT [options] # a video or an image, file to file
    python -m vtoonify_core distill IN OUT.safetensors [options]  # train a fast student on a clip's first frames
    python -m vtoonify_core stylize IN OUT --student OUT.safetensors  # run a student instead of VToonify

``stylize`` streams a video chunk by chunk (flat memory, audio and frame rate kept) and resumes an
interrupted run when the same command is run again; see ``stylize --help``. Model files are
looked up by their official names in ``--models-dir`` (default ``$VTOONIFY_MODELS``, else
``./models/vtoonify``). User errors (missing files, unreadable video, no face) print one message
and exit with status 2.
"""

def models_dir(value: Optional[str] = None) -> Path:
    """The model folder: ``value``, else ``$VTOONIFY_MODELS``, else ``./models/vtoonify``."""
    if value:
        return Path(value).expanduser()
    env = os.environ.get(MODELS_ENV)
    return Path(env).expanduser() if env else DEFAULT_MODELS_DIR


def layout_help(folder: Path) -> str:
    """Where the model files go and their official names."""
    return (
        f"Put the VToonify files in {folder} (or pass --models-dir, or set ${MODELS_ENV}) in the official layout:\n"
        f"  vtoonify_d_<style>/vtoonify_s_d.pt    VToonify-D ({', '.join(D_STYLES)})\n"
        f"  vtoonify_d_<style>/{EXSTYLE_FILE}  its exemplar style codes\n"
        f"  vtoonify_t_<style>/vtoonify.pt        VToonify-T ({', '.join(T_STYLES)})\n"
        f"  {ENCODER_FILE}                            pSp style encoder\n"
        f"  {PARSER_FILE}                       BiSeNet face parser\n"
        f"Download them from {HF_TREE_URL} (encoder, parser, VToonify-D) or {DRIVE_ALL_URL} (also VToonify-T, which is "
        f"not on Hugging Face)")


def resolve_model_file(value: Optional[str], default: str, folder: Path, what: str) -> Path:
    """A model file given as a path, or as a name inside the model folder.

    A bare style name (``cartoon``) for the checkpoint means ``vtoonify_d_<style>/vtoonify_s_d.pt``
    when present, else ``vtoonify_t_<style>/vtoonify.pt``.

    Raises:
        UsageError: the file does not exist (the message gives the layout and official names).
    """
    name = value or default
    candidates = [Path(name).expanduser(), folder / name]
    if what == "checkpoint" and value and "/" not in value and "." not in value:
        candidates += [folder / f"vtoonify_d_{value}" / "vtoonify_s_d.pt",
                       folder / f"vtoonify_t_{value}" / "vtoonify.pt"]
    for c in candidates:
        if c.is_file():
            return c
    raise UsageError(f"{what}: model file '{name}' not found (looked in {Path.cwd()} and {folder}).\n"
                     + layout_help(folder))


def pick_device(choice: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``mps``, else ``cpu``; refuses an unavailable device."""
    import torch

    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available (no NVIDIA GPU or a CPU-only PyTorch); use auto or cpu")
    if choice == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("--device mps: Apple MPS is not available; use auto or cpu")
    return choice


def load_cli_model(args: argparse.Namespace):
    """Load the bundle the ``stylize`` options name (encoder only when the style needs a face)."""
    folder = models_dir(args.models_dir)
    ckpt = resolve_model_file(args.model, DEFAULT_CHECKPOINT, folder, "checkpoint")
    parser = resolve_model_file(args.parser, PARSER_FILE, folder, "parser")
    try:
        encoder = resolve_model_file(args.encoder, ENCODER_FILE, folder, "encoder")
    except UsageError as exc:
        encoder, missing_encoder = None, exc
    else:
        missing_encoder = None
    exstyle = "auto"
    if args.exstyle:
        exstyle = resolve_model_file(args.exstyle, EXSTYLE_FILE, folder, "exstyle")
    device = pick_device(args.device)
    dtype = resolve_dtype(args.precision, device)
    model = load_model(ckpt, encoder, parser, exstyle=exstyle, device=device, dtype=dtype)
    if model.backbone == "dualstylegan" and model.exstyles is None:
        raise UsageError(f"{ckpt} is a VToonify-D checkpoint: it needs its exemplar style codes {EXSTYLE_FILE} beside "
                         f"it (or --exstyle PATH).\n" + layout_help(folder))
    if model.encoder is None and not (model.backbone == "dualstylegan" and args.color_transfer):
        raise missing_encoder
    return model


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` once: not where the help text names the default already, nor for unset options."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def check_output(src: Path, dst: Path, work_dir: Optional[str] = None) -> None:
    """Refuse an output that cannot be written before any model is loaded (seconds later), and create
    its missing folders.

    Raises:
        UsageError: ``dst`` is the input or a folder, or a folder on its way is a file or not writable.
    """
    if dst.is_dir():
        raise UsageError(f"OUT {dst} is a folder: give a file name, e.g. {dst / ('toon' + src.suffix)}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(f"OUT {dst} is the input file: choose another file name")
    for folder in [dst.parent] + ([Path(work_dir)] if work_dir else []):
        _writable_folder(folder)


def _writable_folder(folder: Path) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write to {folder}: {existing} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to {folder}: {exc.strerror or exc}; choose a folder you can write to") from None


def _add_stylize(sub) -> None:
    p = sub.add_parser(
        "stylize", help="toonify a video or an image, file to file (resumable, audio kept)",
        description="Toonify a video (streamed chunk by chunk: flat memory, frame rate, audio and colour range kept; "
                    "an interrupted run resumes when the same command is run again) or an image. The style code "
                    "comes from the first frame with a face.",
        formatter_class=_HelpFormatter)
    p.add_argument("input", metavar="IN", help="video (mp4, mov, mkv, webm, ...) or image (png, jpg, ...)")
    p.add_argument("output", metavar="OUT", help="output file: .mp4/.m4v/.mov/.mkv/.webm for videos, an image "
                                                 "extension for images")
    p.add_argument("--student", help="a student (.safetensors from distill): stylize with it instead of VToonify "
                                     "(whole frames, padded to multiples of 8; no model files needed)")
    _add_model_options(p)
    _add_stylize_options(p)


def _add_model_options(p) -> None:
    p.add_argument("--models-dir",
                   help=f"folder with the official files (default ${MODELS_ENV} or {DEFAULT_MODELS_DIR})")
    p.add_argument("--model", help=f"checkpoint: a path, a name in the model folder, or a style name such as cartoon "
                                   f"(default {DEFAULT_CHECKPOINT})")
    p.add_argument("--encoder", help=f"pSp style encoder (default {ENCODER_FILE})")
    p.add_argument("--parser", help=f"BiSeNet face parser (default {PARSER_FILE})")
    p.add_argument("--exstyle", help=f"exemplar codes of VToonify-D (default: {EXSTYLE_FILE} beside the checkpoint)")
    p.add_argument("--style-id", type=int, default=26, help="VToonify-D exemplar style")
    p.add_argument("--style-degree", type=float, default=0.5, help="VToonify-D style degree in [0, 1]")
    p.add_argument("--color-transfer", action="store_true", help="VToonify-D: use the exemplar's colours")
    p.add_argument("--crop", choices=("face", "whole"), default="face",
                   help="face: the official crop around the first face (output 4x the crop); whole: the whole frame")
    p.add_argument("--face-padding", type=int, default=200,
                   help="face crop: pixels around the eye centre (official 200)")
    p.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="auto = the fastest safe precision of the device: bf16 on CUDA GPUs that have it, else fp16; "
                        "bf16 on CPUs with AMX-BF16; fp32 elsewhere")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")


def _add_stylize_options(p) -> None:
    p.add_argument("--batch-size", type=int, default=4, help="frames per forward pass; 0 = as many as fit in the free memory")
    p.add_argument("--chunk-size", type=int, default=32, help="frames per resumable chunk")
    p.add_argument("--compile", choices=("off", "default", "max-autotune", "reduce-overhead"), default="off",
                   help="torch.compile the generator (minutes of compilation once per frame size, then faster "
                        "frames on long videos; reduce-overhead adds CUDA graphs on CUDA); off = eager")
    p.add_argument("--codec", help="video encoder (default libx264; libvpx-vp9 for .webm; ffv1 for lossless .mkv)")
    p.add_argument("--crf", type=int, help="quality (lower is better; codec default when omitted)")
    p.add_argument("--pix-fmt", help="pixel format (default yuv420p)")
    p.add_argument("--work-dir", help="where chunks and the manifest go (default .<OUT name>.vtoonify beside OUT)")
    p.add_argument("--restart", action="store_true", help="ignore an unfinished run and start over")
    p.add_argument("--keep-work", action="store_true", help="keep the chunk files after the final mux")


def _add_distill(sub) -> None:
    p = sub.add_parser(
        "distill", help="train a fast student on the first frames of a clip (VToonify as the teacher)",
        description="Stylize the first --frames frames of IN with VToonify (style code from the first frame with a "
                    "face) and train a small two-stage video network to reproduce them; OUT (.safetensors) is "
                    "written at the end and when interrupted (Ctrl-C). Run it with `stylize IN OUT --student OUT`. "
                    "The student learns whole frames (padded to multiples of 8), as `stylize --student` feeds them.",
        formatter_class=_HelpFormatter)
    p.add_argument("input", metavar="IN", help="video (or image) to learn from")
    p.add_argument("output", metavar="OUT", help="the student file (.safetensors)")
    p.add_argument("--frames", type=int, default=300, help="frames of IN to learn from (the first ones)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (about a quarter train the refiner)")
    p.add_argument("--no-refiner", action="store_true", help="train Stage I only (no temporal refiner)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per training step")
    p.add_argument("--crop-size", type=int, default=96, help="training crops of at most this many pixels a side")
    p.add_argument("--seed", type=int, default=0)
    _add_model_options(p)
    p.set_defaults(crop="whole")


def _student_frames(rgb: np.ndarray):
    """``(B, H, W, 3)`` uint8 -> whole frames in [-1, 1] padded to multiples of 8, and the padding."""
    from .frames import pad_to_multiple, to_model_range

    x = to_model_range(torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2))
    return pad_to_multiple(x)


def cmd_distill(args: argparse.Namespace) -> int:
    """Run ``distill``; returns the exit status."""
    from .student import train_student, vtoonify_teacher
    from .styles.codes import extract_style, style_from_image

    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise UsageError(f"input not found: {src}")
    if dst.suffix != ".safetensors":
        raise UsageError(f"OUT {dst}: a student is written as .safetensors; give e.g. "
                         f"{dst.with_suffix('.safetensors')}")
    if args.frames < 1 or args.steps < 1:
        raise UsageError("--frames and --steps must be at least 1")
    _writable_folder(dst.parent)
    if video.is_image_path(src):
        rgb = video.read_image(src)[None]
    else:
        rgb = np.stack([f for _, f in video.iter_frames(src, count=args.frames)])
    model = load_cli_model(args)
    if model.backbone == "dualstylegan" and args.color_transfer:
        style = extract_style(model, None, args.style_id, True)
    else:
        style = None
        for frame in rgb:
            try:
                style, _ = style_from_image(model, frame, args.style_id, args.color_transfer)
                break
            except NoFaceError:
                continue
        if style is None:
            raise NoFaceError(f"no face in the first {len(rgb)} frames of {src}: the style code needs one")
    frames, _ = _student_frames(rgb)
    teacher = vtoonify_teacher(model, style, args.style_degree, args.batch_size)
    total = frames.shape[0] + args.steps
    bar = _progress_bar(total, f"distill {src.name}", args.quiet)

    def progress(done: int, tot: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        with _logs_above(bar):
            student = train_student(teacher, frames, steps=args.steps, seed=args.seed, device=model.device,
                                    batch_size=args.batch_size, refiner=not args.no_refiner,
                                    crop_size=args.crop_size, progress=progress, checkpoint=dst)
    except KeyboardInterrupt:
        _close(bar)
        print(f"interrupted; the student trained so far is in {dst}" if dst.exists() else "interrupted",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        _close(bar)
    print(f"wrote {dst} ({student.meta['steps']} steps on {frames.shape[0]} frames {student.meta['size']}, "
          f"loss {student.meta['loss']}, {student.meta['seconds']} s)")
    return 0


def cmd_stylize_student(args: argparse.Namespace) -> int:
    """``stylize --student``: whole frames through a student, streamed (a video keeps its frame rate, not its audio)."""
    from .frames import crop_padding
    from .student import load_student
    from .video.segments import to_uint8_hwc

    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise UsageError(f"input not found: {src}")
    check_output(src, dst)
    device = pick_device(args.device)
    student = load_student(args.student, device, resolve_dtype(args.precision, device))
    chunk = max(1, args.batch_size)
    if video.is_image_path(src):
        x, pad = _student_frames(video.read_image(src)[None])
        video.write_image(dst, to_uint8_hwc(crop_padding(student(x), pad))[0])
        print(f"wrote {dst}")
        return 0
    info = video.probe_video(src)
    bar = _progress_bar(info.frames or 0, src.name, args.quiet)
    state = {"s": None, "n": 0}

    def frames_out():
        for batch in video.files.iter_frame_chunks(src, chunk):
            yield from run(batch)

    def run(batch):
        x, pad = _student_frames(np.stack(batch))
        y, state["s"] = student.stylize(x, state["s"], batch_size=chunk)
        state["n"] += len(batch)
        if bar is not None:
            bar.update(len(batch))
        yield from to_uint8_hwc(crop_padding(y, pad))

    from .host_memory import reuse_host_memory

    try:
        with reuse_host_memory():  # one scope for the clip: the chunks reuse the same heap blocks
            video.write_video(dst, frames_out(), info.rate)
    finally:
        _close(bar)
    print(f"wrote {dst} ({state['n']} frames, {float(info.rate):.3f} fps, no audio)")
    return 0


def _progress_bar(total: int, desc: str, quiet: bool):
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True, file=sys.stderr)


def _close(bar) -> None:
    """Close the progress bar (once), ending its line, so what is printed next starts on a new line."""
    if bar is not None and not getattr(bar, "disable", True):
        bar.close()


@contextlib.contextmanager
def _logs_above(bar):
    """While the bar runs, log records are written above it instead of onto its line."""
    if bar is None:
        yield
        return
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm
    except ImportError:
        yield
        return
    with logging_redirect_tqdm(loggers=[logging.getLogger("vtoonify"), logging.getLogger()]):
        yield


def cmd_stylize(args: argparse.Namespace) -> int:
    """Run ``stylize``; returns the exit status (user errors raise :class:`UsageError`)."""
    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise UsageError(f"input not found: {src}")
    if dst.is_dir():
        raise UsageError(f"OUT {dst} is a folder: give a file name, e.g. {dst / ('toon' + src.suffix)}")
    image = video.is_image_path(src)
    if image != video.is_image_path(dst):
        kind = (f"an image ({', '.join(IMAGE_EXTENSIONS)})" if image
                else f"a video ({', '.join(video.CONTAINERS)})")
        raise UsageError(f"{src} is {'an image' if image else 'a video'} but {dst} is not: give OUT the extension of "
                         f"{kind}")
    if not image:
        video.probe_video(src)  # unreadable input fails before the models load
        video.EncodeSettings(args.codec, args.crf, args.pix_fmt).resolve(dst.suffix)
    check_output(src, dst, None if image else args.work_dir)
    model = load_cli_model(args)
    model.generator.compile_mode = None if args.compile == "off" else args.compile
    if not args.quiet:
        print(f"{model.describe()}", file=sys.stderr)
    if image:
        img = video.stylize_image_file(model, src, dst, None, args.style_degree, style_id=args.style_id,
                                       color_transfer=args.color_transfer, crop_mode=args.crop,
                                       face_padding=args.face_padding, batch_size=1)
        print(f"wrote {dst} ({img.shape[1]}x{img.shape[0]})")
        return 0
    bar = _progress_bar(0, src.name, args.quiet)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    encode = video.EncodeSettings(args.codec, args.crf, args.pix_fmt)
    state = {}

    def on_chunk(k: int, job) -> None:
        state["job"] = job

    try:
        with _logs_above(bar):
            result = video.stylize_video(model, src, dst, None, args.style_degree, style_id=args.style_id,
                                         color_transfer=args.color_transfer, crop_mode=args.crop,
                                         face_padding=args.face_padding, batch_size=args.batch_size,
                                         chunk_size=args.chunk_size, encode=encode, work_dir=args.work_dir,
                                         resume=not args.restart, keep_work=args.keep_work, progress=progress,
                                         on_chunk=on_chunk)
    except KeyboardInterrupt:
        _close(bar)  # the message goes below the bar, not onto its line
        job = state.get("job")
        done = "" if job is None else f" ({len(job.chunks) - len(job.pending)} of {len(job.chunks)} chunks done)"
        print(f"interrupted{done}; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        _close(bar)
    h, w = result.job.output_size
    note = (f", resumed: {result.chunks - result.chunks_run} of {result.chunks} chunks were done"
            if result.resumed else "")
    print(f"wrote {result.output} ({result.frames} frames, {w}x{h}, {float(result.job.info.rate):.3f} fps, "
          f"{len(result.job.info.audio)} audio stream(s), {result.seconds:.1f} s{note})")
    return 0


def main(argv=None) -> int:
    """Entry point: parse ``argv`` and run the sub-command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m vtoonify_core", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="convert an official checkpoint or exstyle_code.npy to .safetensors")
    p.add_argument("src")
    p.add_argument("dst")
    _add_stylize(sub)
    _add_distill(sub)
    args = parser.parse_args(argv)
    if args.command == "convert":
        try:
            meta = convert(args.src, args.dst)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.dst} ({', '.join(f'{k}={v}' for k, v in meta.items() if k != 'opts')}); read back equal")
        return 0
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.command == "stylize":
        return _run_user_errors(lambda: cmd_stylize_student(args) if args.student else cmd_stylize(args))
    if args.command == "distill":
        return _run_user_errors(lambda: cmd_distill(args))
    return 0


def _run_user_errors(fn) -> int:
    """Run ``fn``; user errors print ``error: ...`` and give status 2 (no traceback)."""
    try:
        return fn()
    except NoFaceError as exc:
        hint = "--crop whole" if CROP_ADVICE in str(exc) else "--style-id N --color-transfer (VToonify-D)"
        print(f"error: {exc} (on the command line: {hint})", file=sys.stderr)
        return EXIT_USER_ERROR
    except (UsageError, VideoError, InputError, CheckpointError, FaceBackendUnavailableError, FileNotFoundError,
            ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
