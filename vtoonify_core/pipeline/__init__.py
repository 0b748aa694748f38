"""The clip pipeline built from the parts: parse frames, stylize frames, and whole clips of any
size through the official face crop or the padded whole frame."""
from .clip import ClipPlan, plan_clip, stylize_clip
from .parsing import class_mask, color_map, parse, resolve_classes
from .stylize import stylize

__all__ = ["ClipPlan", "class_mask", "color_map", "parse", "plan_clip", "resolve_classes", "stylize", "stylize_clip"]
