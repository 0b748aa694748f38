"""Batch tools on top of the core: a client that queues inputs on ComfyUI servers over HTTP
(``python -m vtoonify_core.batch``) and a Ray runner that spreads a video's chunks over workers.
Nothing else in the package imports them."""
