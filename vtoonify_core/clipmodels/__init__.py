"""Full local CLIP models (both towers) for text-driven styles: transformers and open_clip folders
behind one ``encode_image`` / ``encode_text`` interface. Nothing is downloaded."""
from .loaders import (CLIP_HINT, ClipModel, OpenClip, TransformersClip, check_embeddings, detect_format,
                      find_clip_models, load_clip)

__all__ = ["CLIP_HINT", "ClipModel", "OpenClip", "TransformersClip", "check_embeddings", "detect_format",
           "find_clip_models", "load_clip"]
