"""Command line: ``python -m vtoonify_core convert SRC DST`` (more sub-commands: see ``--help``)."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtoonify_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert", help="convert an official checkpoint or exstyle_code.npy to .safetensors")
    p.add_argument("src")
    p.add_argument("dst")
    args = parser.parse_args(argv)
    if args.command == "convert":
        from .convert import convert
        from .weights import CheckpointError

        try:
            meta = convert(args.src, args.dst)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.dst} ({', '.join(f'{k}={v}' for k, v in meta.items() if k != 'opts')}); read back equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
