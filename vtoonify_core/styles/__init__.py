"""Style codes: the official W+ rule from faces and exemplars, exemplars from any image, mixing and
averaging codes, keyframed styles over a clip, and codes edited by a sentence (CLIP)."""
from .codes import check_style, encode_face, exemplar_wplus, extract_style, prepare_style_image, style_from_image
from .exemplars import (ExemplarCode, encode_zplus, exemplar_from_aligned, exemplar_from_images, refine_exemplar,
                        style_from_exemplar, synthesize_exemplar)
from .mixing import average_codes, average_styles, layer_roles, mix_styles, resolve_layers
from .schedules import Keyframe, StyleSchedule, forward_scheduled, parse_keyframes
from .text import TextEdit, edit_style_by_text, optimise_style_by_text, render_style

__all__ = ["ExemplarCode", "Keyframe", "StyleSchedule", "average_codes", "average_styles", "check_style",
           "encode_face", "encode_zplus", "exemplar_from_aligned", "exemplar_from_images", "exemplar_wplus", "extract_style",
           "forward_scheduled", "layer_roles", "mix_styles", "parse_keyframes", "prepare_style_image",
           "refine_exemplar", "resolve_layers", "style_from_exemplar", "style_from_image", "synthesize_exemplar",
           "TextEdit", "edit_style_by_text", "optimise_style_by_text", "render_style"]
