"""The networks, each loading its official checkpoint unchanged: VToonify-T/-D (``vtoonify``), their
StyleGAN/DualStyleGAN parts, the pSp style encoder, the BiSeNet face parser, the exemplar codes,
and the bundle of all of them on one device."""
from .bisenet import load_face_parser, parse_frames
from .bundle import FaceParserModel, VToonifyModel, find_exstyle, load_model, merge_vtoonify, save_model
from .exstyle import ExStyles, load_exstyles, save_exstyles
from .merge import PARTS, merge_networks, save_network
from .psp import load_style_encoder
from .vtoonify import VToonify, build_vtoonify, load_vtoonify

__all__ = ["PARTS", "merge_networks", "merge_vtoonify", "save_model", "save_network", "ExStyles", "FaceParserModel", "VToonify", "VToonifyModel", "build_vtoonify", "find_exstyle",
           "load_exstyles", "load_face_parser", "load_model", "load_style_encoder", "load_vtoonify", "parse_frames",
           "save_exstyles"]
