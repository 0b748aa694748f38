"""``python -m vtoonify_core.batch``: the ComfyUI batch-queue client (:mod:`vtoonify_core.batch.client`)."""
import sys

from .client import main

sys.exit(main())
