"""``python -m vtoonify_core``: the command line (:mod:`vtoonify_core.cli`)."""
import sys

from .cli import main

sys.exit(main())
