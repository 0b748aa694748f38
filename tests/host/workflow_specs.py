"""The example workflows of ``workflows/``, described as graphs for the real ComfyUI frontend to build.

``tests/host/test_workflows.py`` builds each spec in headless Chromium (LiteGraph nodes, links, groups,
notes), and with ``VTOONIFY_WRITE_WORKFLOWS=1`` saves what the frontend serializes:

* ``workflows/<title>.json``     UI format (``app.graphToPrompt().workflow``), for dragging into ComfyUI
                                  and as a template (titled by its file name, see :data:`TITLES`);
* ``workflows/api/<name>.json``  API format (``app.graphToPrompt().output``), for ``POST /prompt``;
* ``workflows/<title>.jpg``      a thumbnail of the loaded graph (ComfyUI's template browser shows it).

A spec is a dict:

``nodes``    key -> ``{"type", "title"?, "widgets"?: {name: value}, "width"?, "height"?, "color"?, "mode"?}``
             (``text`` for ``MarkdownNote``/``Note``);
``links``    ``(from_key, output_name, to_key, input_name)``; an input that is a widget (e.g. the
             ``width`` of Upscale Image) turns into a socket when linked;
``columns``  the layout, left to right: each column is a list of blocks stacked top down, a block is
             ``{"group": title or None, "color"?: group colour, "nodes": [keys]}``.

Model and image names are the official ones, so a user who puts the official files into
``models/vtoonify`` (and an upscaler into ``models/upscale_models``) runs them unchanged.
"""
from __future__ import annotations

T_CARTOON = "vtoonify_t_cartoon/vtoonify.pt"
D_CARTOON = "vtoonify_d_cartoon/vtoonify_s_d.pt"
D_ARCANE = "vtoonify_d_arcane/vtoonify_s_d.pt"
ENCODER = "encoder.pt"
PARSER = "faceparsing.pth"
UPSCALER = "RealESRGAN_x2plus.pth"
EXAMPLE_IMAGE = "vtoonify_example.png"
EXAMPLE_CLIP = "vtoonify_example_clip.mp4"
REFERENCE_IMAGE = "vtoonify_reference.png"
#: the example inputs the pack ships (example_inputs/) and copies into ComfyUI's input folder
EXAMPLE_INPUTS = (EXAMPLE_IMAGE, EXAMPLE_CLIP, REFERENCE_IMAGE)
#: Load VToonify Model in the templates: VToonify-D, which the in-app download fetches (Hugging Face)
DEFAULT_CHECKPOINT = D_CARTOON

# LiteGraph's group colours (LGraphCanvas.node_colors[...].groupcolor)
BLUE, GREEN, YELLOW, PURPLE, CYAN, BROWN = "#88A", "#8A8", "#b58b2a", "#a1309b", "#3f789e", "#b06634"

MODELS_TEXT = (
    "**Model files** go into `ComfyUI/models/vtoonify/`, in the official layout. This workflow uses "
    "VToonify-D: `vtoonify_d_cartoon/vtoonify_s_d.pt` + `exstyle_code.npy`, with `encoder.pt` and "
    "`faceparsing.pth`; all of them are in the Hugging Face repository "
    "[PKUWilliamYang/VToonify](https://huggingface.co/PKUWilliamYang/VToonify/tree/main/models), and "
    "**Download** on *Load VToonify Model* fetches them (or tick **download_missing**; needs `huggingface_hub`).\n\n"
    "**VToonify-T** checkpoints (`vtoonify_t_cartoon/vtoonify.pt`, `vtoonify_t_caricature/vtoonify.pt`, "
    "`vtoonify_t_arcane/vtoonify.pt`, `vtoonify_t_comic/vtoonify.pt`, `vtoonify_t_pixar/vtoonify.pt`) are on "
    "Google Drive only (folders linked in the official README): download them by hand into those folders, "
    "then choose one in *checkpoint*. The loader's description lists every official checkpoint.\n\n"
    "**precision** `auto`: fp16 on CUDA GPUs that run it fast, bf16 on CPUs with AMX, else fp32.\n\n"
    "**Example inputs** (`vtoonify_example.png`, `vtoonify_example_clip.mp4`, `vtoonify_reference.png`: "
    "NASA's public-domain astronaut portrait from scikit-image) are copied into ComfyUI's input folder by the "
    "pack; replace them with your own.")

#: white pixels between the panels of the merge workflow (Stitch Images)
MERGE_SPACING = 16

FACE_CROP_TEXT = (
    "**Stylize Frames** in `face (official crop)` mode rescales the frames so the eyes of the first face "
    "are 64 px apart and crops a window of `face_padding` px around them; the output is **4x that crop** "
    "(about 1600x1600 px with the default 200). `whole frame (pad to 8)` stylizes the whole frame instead "
    "(output 4x the frame).")


def _loader(checkpoint: str) -> dict:
    return {"type": "VToonifyLoadModel", "width": 360, "widgets": {
        "checkpoint": checkpoint, "style_encoder": ENCODER, "face_parser": PARSER, "exstyle": "auto",
        "device": "auto", "precision": "auto", "download_missing": False}}


def _load_image(name: str, title: str) -> dict:
    return {"type": "LoadImage", "title": title, "width": 300, "height": 330, "widgets": {"image": name}}


def _note(text: str, width: int = 420, height: int = 300) -> dict:
    return {"type": "MarkdownNote", "title": "About this workflow", "text": text, "width": width, "height": height}


def _stylize(degree: float = 0.5, title: str | None = None, **extra) -> dict:
    node = {"type": "VToonifyStylizeFrames", "width": 300, "widgets": {
        "style_degree": degree, "crop_mode": "face (official crop)", "batch_size": 4, "face_padding": 200, **extra}}
    if title:
        node["title"] = title
    return node


def _extract(style_id: int = 26, color_transfer: bool = False, title: str | None = None) -> dict:
    node = {"type": "VToonifyExtractStyle", "width": 300,
            "widgets": {"style_id": style_id, "color_transfer": color_transfer}}
    if title:
        node["title"] = title
    return node


def _merge(title: str, ratio: float, **parts: float) -> dict:
    return {"type": "VToonifyMergeModels", "title": title, "width": 320,
            "widgets": {"ratio": ratio, "exstyles": "a", **parts}}


def _stitch(title: str) -> dict:
    return {"type": "ImageStitch", "title": title, "width": 300, "widgets": {
        "direction": "right", "match_image_size": False, "spacing_width": MERGE_SPACING, "spacing_color": "white"}}


def _save(prefix: str, title: str) -> dict:
    return {"type": "SaveImage", "title": title, "width": 320, "height": 300, "widgets": {"filename_prefix": prefix}}


# ---------------------------------------------------------------------------------------------- (1) video, frame by frame

VIDEO_SAVE_TEXT = ("**Save Video** writes an MP4 (H.264 + AAC) into `ComfyUI/output/vtoonify/` and shows it on the "
                   "node.")


def _load_video(title: str = "Load Video (mp4 with sound)") -> dict:
    return {"type": "LoadVideo", "title": title, "width": 300, "height": 330, "widgets": {"file": EXAMPLE_CLIP}}


def _save_video(prefix: str, title: str) -> dict:
    return {"type": "SaveVideo", "title": title, "width": 320, "height": 380,
            "widgets": {"filename_prefix": prefix, "format": "mp4"}}


VIDEO_FRAMES = {
    "nodes": {
        "note": _note(
            "## Video with sound, frame by frame\n\n"
            "1. **Load Video** reads an MP4 (or MOV, MKV, WebM); **Get Video Components** gives its frames "
            "(`images`), its sound (`audio`) and its frame rate (`fps`).\n"
            "2. **Extract Style Code** reads the face in the first frame (pSp encoder; exemplar `style_id` 26).\n"
            "3. **Face Parse** + **Smooth Parsing** parse every frame and average the maps along the optical flow "
            "of neighbouring frames (paper, Sec. 4.1): less flicker around hair and face edges.\n"
            "4. **Stylize Frames** crops every frame like the first one and toonifies the clip (`batch_size` "
            "frames at a time; Cancel stops between chunks). **VToonify Deflicker** blends each stylized frame "
            "with the previous one warped along the motion of the input frames (`guide_images`).\n"
            "5. **Create Video** puts the frames back together with the clip's own `fps` and `audio`: every frame, "
            "the frame rate and the sound are kept. " + VIDEO_SAVE_TEXT + "\n\n"
            "Every frame is held in memory (input and stylized): for long videos use the streamed template "
            "(*Long video with sound, streamed*).\n\n" + FACE_CROP_TEXT + "\n\n" + MODELS_TEXT,
            height=780),
        "video": _load_video(),
        "components": {"type": "GetVideoComponents", "width": 300},
        "loader": _loader(DEFAULT_CHECKPOINT),
        "extract": _extract(),
        "aligned": {"type": "PreviewImage", "title": "Aligned face", "width": 240, "height": 260},
        "parse": {"type": "VToonifyFaceParse", "width": 300},
        "smooth": {"type": "VToonifySmoothParsing", "width": 300,
                   "widgets": {"k": 5, "sigma_t": 5.5, "sigma_s": 0.2, "flow": "dis"}},
        "stylize": _stylize(),
        "deflicker": {"type": "VToonifyDeflicker", "width": 300,
                      "widgets": {"strength": 0.5, "flow": "dis", "flow_scale": 0.5}},
        "create": {"type": "CreateVideo", "width": 300},
        "save": _save_video("vtoonify/video_frames", "Save Video (mp4 with sound)"),
    },
    "links": [
        ("video", "VIDEO", "components", "video"),
        ("loader", "vtoonify_model", "extract", "vtoonify_model"),
        ("components", "images", "extract", "image"),
        ("extract", "aligned_face", "aligned", "images"),
        ("loader", "face_parser", "parse", "face_parser"),
        ("components", "images", "parse", "images"),
        ("parse", "face_parsing", "smooth", "face_parsing"),
        ("components", "images", "smooth", "images"),
        ("loader", "vtoonify_model", "stylize", "vtoonify_model"),
        ("components", "images", "stylize", "images"),
        ("extract", "style", "stylize", "style"),
        ("smooth", "face_parsing", "stylize", "face_parsing"),
        ("stylize", "images", "deflicker", "images"),
        ("components", "images", "deflicker", "guide_images"),
        ("deflicker", "images", "create", "images"),
        ("components", "fps", "create", "fps"),
        ("components", "audio", "create", "audio"),
        ("create", "VIDEO", "save", "video"),
    ],
    "columns": [
        [{"group": None, "nodes": ["note"]}],
        # Load Video's player takes the node's height once the clip is loaded: nothing right below it
        [{"group": "1. Input video", "color": BLUE, "nodes": ["video"]},
         {"group": "Models", "color": BROWN, "nodes": ["loader"]}],
        [{"group": "1. Frames, sound, fps", "color": BLUE, "nodes": ["components"]},
         {"group": "2. Style code (first frame)", "color": PURPLE, "nodes": ["extract", "aligned"]}],
        [{"group": "3. Parsing, smoothed over time", "color": CYAN, "nodes": ["parse", "smooth"]}],
        [{"group": "4. Stylize, deflicker", "color": GREEN, "nodes": ["stylize", "deflicker"]}],
        [{"group": "5. Video with the clip's fps and sound", "color": YELLOW, "nodes": ["create", "save"]}],
    ],
}

# ---------------------------------------------------------------------------------------------- (1b) video, streamed

VIDEO_STREAM = {
    "nodes": {
        "note": _note(
            "## Long video with sound, streamed\n\n"
            "**Stylize Video** takes a VIDEO and returns a VIDEO: it decodes a chunk of frames (`chunk_size`), "
            "stylizes and encodes it, then the next, so memory stays flat however long the video is. The frame "
            "count, frame rate, sound and duration are kept.\n\n"
            "* The crop (face mode) and the style code come from the first frame with a face (`style_id`, "
            "`color_transfer`); connect a style (Extract Style Code, Style Mix, Style Keyframes, ...) to "
            "choose another.\n"
            "* **VToonify Speed Settings** bakes the style into the decoder and folds the up-sampling: the same "
            "picture, faster (`compile` helps on GPUs).\n"
            "* Cancel stops after the current chunk; queue the same prompt again and it continues from there "
            "(finished chunks are kept in `ComfyUI/output/vtoonify/`).\n"
            "* The result is an MP4 in ComfyUI's temp folder: " + VIDEO_SAVE_TEXT + " Connect *Get Video "
            "Components* to get its frames.\n\n" + FACE_CROP_TEXT + "\n\n" + MODELS_TEXT,
            height=700),
        "video": _load_video(),
        "loader": _loader(DEFAULT_CHECKPOINT),
        "speed": {"type": "VToonifySpeedSettings", "width": 300,
                  "widgets": {"bake_style": True, "channels_last": True, "fold_upsampling": "auto",
                              "compile": "off"}},
        "stylize": {"type": "VToonifyStylizeVideo", "width": 320, "widgets": {
            "style_degree": 0.5, "batch_size": 4, "crop_mode": "face (official crop)", "style_id": 26,
            "color_transfer": False, "face_padding": 200, "chunk_size": 32, "crf": 18, "preview_frames": 4}},
        "previews": {"type": "PreviewImage", "title": "Stylized frames (first to last)", "width": 260,
                     "height": 280},
        "save": _save_video("vtoonify/video_stream", "Save Video (mp4 with sound)"),
    },
    "links": [
        ("loader", "vtoonify_model", "speed", "vtoonify_model"),
        ("speed", "vtoonify_model", "stylize", "vtoonify_model"),
        ("video", "VIDEO", "stylize", "video"),
        ("stylize", "previews", "previews", "images"),
        ("stylize", "video", "save", "video"),
    ],
    "columns": [
        [{"group": None, "nodes": ["note"]}],
        [{"group": "Input video", "color": BLUE, "nodes": ["video"]},
         {"group": "Models", "color": BROWN, "nodes": ["loader"]}],
        [{"group": "Same picture, faster", "color": CYAN, "nodes": ["speed"]},
         # the node shows its video when it has run: nothing below it
         {"group": "Stylize, chunk by chunk", "color": GREEN, "nodes": ["stylize"]}],
        [{"group": None, "nodes": ["previews"]},
         {"group": "Save", "color": YELLOW, "nodes": ["save"]}],
    ],
}

# ---------------------------------------------------------------------------------------------- (1c) keyframed styles

#: the keyframes of the keyframed-styles template (over the 8 frames of the example clip)
KEYFRAMES = "0:A@0.3, 4:C, 7:B@0.8"

STYLE_KEYFRAMES = {
    "nodes": {
        "note": _note(
            "## Styles changing over a video\n\n"
            "Three VToonify-D style codes, turned into keyframes:\n"
            "* **A**: the exemplar style 26 with the face's colours (**Extract Style Code** on the portrait);\n"
            "* **B**: a new exemplar made from any picture (**Exemplar Style From Image** on the reference "
            "portrait; its structure and, with `color_transfer`, its colours; `refine_steps` optimises the code "
            "through DualStyleGAN);\n"
            "* **C**: **Style Mix** of A and B on the colour layers 7-17 (`blend` 0.5).\n\n"
            "**Style Keyframes** `" + KEYFRAMES + "`: style A at frame 0 (degree 0.3), C at frame 4, B at frame "
            "7 (degree 0.8); codes and degrees are interpolated in between.\n\n"
            "**Stylize Video File** streams a video given by its file name (a file of ComfyUI's input folder, or "
            "an allowed absolute path) into `ComfyUI/output/<output_name>`, chunk by chunk, with its sound, and "
            "returns the written file's path. It suits batch scripts (`workflows/api/`); in a graph, *Stylize "
            "Video* takes Load Video's VIDEO instead.\n\n" + MODELS_TEXT, height=720),
        "image": _load_image(EXAMPLE_IMAGE, "Load portrait (style A)"),
        "reference": _load_image(REFERENCE_IMAGE, "Load reference (style B)"),
        "loader": _loader(DEFAULT_CHECKPOINT),
        "extract": _extract(26, False, "Extract Style Code (A)"),
        "exemplar": {"type": "VToonifyExemplarStyle", "title": "Exemplar Style From Image (B)", "width": 320,
                     "widgets": {"color_transfer": True, "refine_steps": 0, "learning_rate": 0.05,
                                 "refine_resolution": "256", "loss": "l2"}},
        "mix": {"type": "VToonifyStyleMix", "title": "Style Mix (C: A + B colours)", "width": 300,
                "widgets": {"blend": 0.5, "layers": "colour (7-17)", "first_layer": 0, "last_layer": 17}},
        "keyframes": {"type": "VToonifyStyleKeyframes", "width": 300, "widgets": {"keyframes": KEYFRAMES}},
        "schedule_info": {"type": "PreviewAny", "title": "schedule_info", "width": 300, "height": 140},
        "stylize": {"type": "VToonifyStylizeVideoFile", "width": 340, "widgets": {
            "video_path": EXAMPLE_CLIP, "output_name": "vtoonify/%stem%_keyframes.mp4", "style_degree": 0.5,
            "batch_size": 4, "crop_mode": "face (official crop)", "style_id": 26, "color_transfer": False,
            "face_padding": 200, "chunk_size": 32, "crf": 18, "preview_frames": 4}},
        "path": {"type": "PreviewAny", "title": "Written video", "width": 340, "height": 110},
        "previews": {"type": "PreviewImage", "title": "Stylized frames (first to last)", "width": 260,
                     "height": 280},
    },
    "links": [
        ("loader", "vtoonify_model", "extract", "vtoonify_model"),
        ("image", "IMAGE", "extract", "image"),
        ("loader", "vtoonify_model", "exemplar", "vtoonify_model"),
        ("reference", "IMAGE", "exemplar", "reference"),
        ("image", "IMAGE", "exemplar", "face"),
        ("extract", "style", "mix", "style_a"),
        ("exemplar", "style", "mix", "style_b"),
        ("extract", "style", "keyframes", "style_a"),
        ("exemplar", "style", "keyframes", "style_b"),
        ("mix", "style", "keyframes", "style_c"),
        ("keyframes", "schedule_info", "schedule_info", "source"),
        ("loader", "vtoonify_model", "stylize", "vtoonify_model"),
        ("keyframes", "style", "stylize", "style"),
        ("stylize", "video_path", "path", "source"),
        ("stylize", "previews", "previews", "images"),
    ],
    "columns": [
        [{"group": None, "nodes": ["note"]}],
        [{"group": "Inputs", "color": BLUE, "nodes": ["image", "reference"]},
         {"group": "Models", "color": BROWN, "nodes": ["loader"]}],
        [{"group": "Styles A, B and C", "color": PURPLE, "nodes": ["extract", "exemplar", "mix"]}],
        [{"group": "Keyframes", "color": PURPLE, "nodes": ["keyframes", "schedule_info"]}],
        [{"group": None, "nodes": ["path", "previews"]}],
        # the node shows the written video when it has run: nothing below it
        [{"group": "Stylize the video file", "color": GREEN, "nodes": ["stylize"]}],
    ],
}

# ---------------------------------------------------------------------------------------------- (1d) text-edited styles

#: the CLIP folder the text template names (ComfyUI/models/clip/<CLIP_FOLDER>, Hugging Face format)
CLIP_FOLDER = "openai/clip-vit-base-patch32"
#: the two sentences of the text template (styles A and B) and their keyframes over the example clip:
#: A held on frames 0-3, B from frame 4
TEXT_EDITS = ("a cartoon with big eyes", "a grumpy old cartoon")
TEXT_KEYFRAMES = "0:A, 3:A, 4:B"

CLIP_TEXT = (
    "**CLIP**: a full CLIP with both towers (image and text) in Hugging Face format, e.g. "
    "[openai/clip-vit-base-patch32](https://huggingface.co/openai/clip-vit-base-patch32) (`config.json`, "
    "`model.safetensors`, the tokenizer files) in `ComfyUI/models/clip/" + CLIP_FOLDER + "/` (or "
    "`models/vtoonify/clip/`); an open_clip folder works too. The Stable Diffusion text encoders usually found "
    "in `models/clip/` have one tower only and are refused. Nothing is downloaded.")


def _edit(text: str, title: str) -> dict:
    return {"type": "VToonifyEditStyleByText", "title": title, "width": 340, "widgets": {
        "text": text, "clip_model": CLIP_FOLDER, "steps": 50, "strength": 1.0, "layers": "all", "first_layer": 0,
        "last_layer": 17, "source_text": "", "learning_rate": 0.1, "l2_weight": 0.008, "identity_weight": 0.0,
        "resolution": "256", "seed": 0, "control_after_generate": "fixed", "augmentations": 0}}


TEXT_STYLES = {
    "nodes": {
        "note": _note(
            "## Styles edited by text over a video\n\n"
            "1. **Extract Style Code** reads the face of the portrait (exemplar `style_id` 26).\n"
            "2. **Edit Style by Text** moves that code twice, each toward a sentence under CLIP (StyleCLIP's "
            "latent optimisation through DualStyleGAN, `steps` Adam steps with an L2 pull to the start code; the "
            "face stays the portrait's through the `face` input): **A** \"" + TEXT_EDITS[0] + "\", **B** \""
            + TEXT_EDITS[1] + "\". Each shows the face before and after its edit.\n"
            "3. **Style Keyframes** `" + TEXT_KEYFRAMES + "`: style A on frames 0-3, B from frame 4 on (write "
            "`0:A, 120:B` to morph from one into the other over 120 frames).\n"
            "4. **Stylize Video** toonifies the clip chunk by chunk with the keyframed styles, keeping its frames, "
            "frame rate and sound. " + VIDEO_SAVE_TEXT + "\n\n"
            "Each step runs the backbone and CLIP forward and backward: on a CPU, lower `steps` or `resolution` "
            "to try things out. Cancel stops an edit and keeps the best code so far.\n\n"
            + CLIP_TEXT + "\n\n" + FACE_CROP_TEXT + "\n\n" + MODELS_TEXT, height=860),
        "image": _load_image(EXAMPLE_IMAGE, "Load portrait"),
        "video": _load_video(),
        "loader": _loader(DEFAULT_CHECKPOINT),
        "extract": _extract(26, False, "Extract Style Code (the face)"),
        "edit_a": _edit(TEXT_EDITS[0], "Edit Style by Text (A: big eyes)"),
        "edit_b": _edit(TEXT_EDITS[1], "Edit Style by Text (B: grumpy, old)"),
        "before_after_a": {"type": "PreviewImage", "title": "A: before, after", "width": 260, "height": 280},
        "before_after_b": {"type": "PreviewImage", "title": "B: before, after", "width": 260, "height": 280},
        "keyframes": {"type": "VToonifyStyleKeyframes", "width": 300, "widgets": {"keyframes": TEXT_KEYFRAMES}},
        "schedule_info": {"type": "PreviewAny", "title": "schedule_info", "width": 300, "height": 140},
        "stylize": {"type": "VToonifyStylizeVideo", "width": 320, "widgets": {
            "style_degree": 0.5, "batch_size": 4, "crop_mode": "face (official crop)", "style_id": 26,
            "color_transfer": False, "face_padding": 200, "chunk_size": 32, "crf": 18, "preview_frames": 8}},
        "previews": {"type": "PreviewImage", "title": "Stylized frames (first to last)", "width": 260,
                     "height": 280},
        "save": _save_video("vtoonify/text_styles", "Save Video (mp4 with sound)"),
    },
    "links": [
        ("loader", "vtoonify_model", "extract", "vtoonify_model"),
        ("image", "IMAGE", "extract", "image"),
        *[link for key in ("edit_a", "edit_b") for link in (
            ("loader", "vtoonify_model", key, "vtoonify_model"), ("extract", "style", key, "style"),
            ("image", "IMAGE", key, "face"))],
        ("edit_a", "before_after", "before_after_a", "images"),
        ("edit_b", "before_after", "before_after_b", "images"),
        ("edit_a", "style", "keyframes", "style_a"),
        ("edit_b", "style", "keyframes", "style_b"),
        ("keyframes", "schedule_info", "schedule_info", "source"),
        ("loader", "vtoonify_model", "stylize", "vtoonify_model"),
        ("video", "VIDEO", "stylize", "video"),
        ("keyframes", "style", "stylize", "style"),
        ("stylize", "previews", "previews", "images"),
        ("stylize", "video", "save", "video"),
    ],
    "columns": [
        [{"group": None, "nodes": ["note"]}],
        [{"group": "Face", "color": BLUE, "nodes": ["image"]},
         {"group": "Models", "color": BROWN, "nodes": ["loader"]}],
        [{"group": "1. Style code of the face", "color": PURPLE, "nodes": ["extract"]},
         {"group": "2. Edited by text", "color": PURPLE, "nodes": ["edit_a", "edit_b"]}],
        [{"group": None, "nodes": ["before_after_a", "before_after_b"]}],
        [{"group": "3. Keyframes", "color": PURPLE, "nodes": ["keyframes", "schedule_info"]},
         # Load Video's player takes the node's height once the clip is loaded: nothing right below it
         {"group": "Input video", "color": BLUE, "nodes": ["video"]}],
        # the node shows its video when it has run: nothing below it
        [{"group": "4. Stylize the video", "color": GREEN, "nodes": ["stylize"]}],
        [{"group": None, "nodes": ["previews"]},
         {"group": "Save", "color": YELLOW, "nodes": ["save"]}],
    ],
}

# ---------------------------------------------------------------------------------------------- (2) VToonify-D exemplar

D_EXEMPLAR = {
    "nodes": {
        "note": _note(
            "## VToonify-D: exemplar style, style degree, colour transfer\n\n"
            "VToonify-D (DualStyleGAN) takes its style from one of the exemplar images the checkpoint was "
            "trained on (`exstyle_code.npy` beside the checkpoint: 317 cartoon, 199 caricature, 100 arcane, "
            "101 comic, 156 illustration, 122 pixar styles).\n\n"
            "* **style_id** picks the exemplar (*style_info* names it).\n"
            "* **color_transfer** off: structure from the exemplar, colours from the face (top branch); on: the "
            "exemplar's colours too (bottom branch; best with a colour-transfer checkpoint such as "
            "`vtoonify_s_d_c.pt` where the style has one).\n"
            "* **style_degree** (Stylize Frames) 0..1: how strongly the style applies.\n\n"
            "Both branches share the model and the input; delete one to save time.\n\n"
            + FACE_CROP_TEXT + "\n\n" + MODELS_TEXT, height=560),
        "image": _load_image(EXAMPLE_IMAGE, "Load portrait"),
        "loader": _loader(D_CARTOON),
        "extract": _extract(26, False, "Extract Style Code (exemplar 26)"),
        "info": {"type": "PreviewAny", "title": "style_info", "width": 300, "height": 110},
        "extract_color": _extract(26, True, "Extract Style Code (exemplar 26, colour transfer)"),
        "info_color": {"type": "PreviewAny", "title": "style_info (colour transfer)", "width": 300, "height": 110},
        "stylize": _stylize(0.5, "Stylize Frames (face colours)"),
        "stylize_color": _stylize(0.5, "Stylize Frames (exemplar colours)"),
        "save": _save("vtoonify/d_exemplar", "Save (face colours)"),
        "save_color": _save("vtoonify/d_exemplar_color", "Save (exemplar colours)"),
    },
    "links": [
        ("loader", "vtoonify_model", "extract", "vtoonify_model"),
        ("image", "IMAGE", "extract", "image"),
        ("extract", "style_info", "info", "source"),
        ("loader", "vtoonify_model", "extract_color", "vtoonify_model"),
        ("image", "IMAGE", "extract_color", "image"),
        ("extract_color", "style_info", "info_color", "source"),
        ("loader", "vtoonify_model", "stylize", "vtoonify_model"),
        ("image", "IMAGE", "stylize", "images"),
        ("extract", "style", "stylize", "style"),
        ("loader", "vtoonify_model", "stylize_color", "vtoonify_model"),
        ("image", "IMAGE", "stylize_color", "images"),
        ("extract_color", "style", "stylize_color", "style"),
        ("stylize", "images", "save", "images"),
        ("stylize_color", "images", "save_color", "images"),
    ],
    "columns": [
        [{"group": None, "nodes": ["note"]}],
        [{"group": "Input", "color": BLUE, "nodes": ["image"]},
         {"group": "Models", "color": BROWN, "nodes": ["loader"]}],
        [{"group": "Exemplar style 26, face colours", "color": PURPLE, "nodes": ["extract", "info"]},
         {"group": "Exemplar style 26, exemplar colours", "color": PURPLE, "nodes": ["extract_color", "info_color"]}],
        [{"group": "Stylize", "color": GREEN, "nodes": ["stylize", "stylize_color"]}],
        [{"group": "Save", "color": YELLOW, "nodes": ["save", "save_color"]}],
    ],
}

# ---------------------------------------------------------------------------------------------- (3) upscaling


def _upscale_spec(cheap: bool) -> dict:
    if cheap:
        intro = ("## VToonify-D + cheap upscale\n\n"
                 "The stylized frames (4x the face crop) are enlarged 2x more with **Upscale Image By** "
                 "(lanczos): no model, no extra memory, instant. For sharper results use the upscaler "
                 "workflow (*vtoonify_upscale*), which runs an upscale model instead.\n\n")
        nodes = {"upscale": {"type": "ImageScaleBy", "title": "Upscale Image By (lanczos 2x)", "width": 300,
                             "widgets": {"upscale_method": "lanczos", "scale_by": 2.0}}}
        links = [("stylize", "images", "upscale", "image")]
        blocks = [{"group": "Upscale", "color": CYAN, "nodes": ["upscale"]}]
    else:
        intro = ("## VToonify-D + upscale model\n\n"
                 "The stylized frames (4x the face crop) go through an image upscale model: "
                 "**Load Upscale Model** reads any model ComfyUI supports (ESRGAN / Real-ESRGAN, SwinIR, "
                 "HAT, ...) from `ComfyUI/models/upscale_models/`; this workflow names "
                 f"`{UPSCALER}` (Real-ESRGAN 2x). A 4x model gives 16x the crop: follow it with *Upscale Image "
                 "By* 0.5 if that is too large. **Upscale Image (using Model)** works in tiles, so memory "
                 "stays bounded. For a cheap variant without a model see *vtoonify_upscale_cheap*.\n\n")
        nodes = {"upscale_model": {"type": "UpscaleModelLoader", "title": "Load Upscale Model", "width": 300,
                                   "widgets": {"model_name": UPSCALER}},
                 "upscale": {"type": "ImageUpscaleWithModel", "width": 300}}
        links = [("upscale_model", "UPSCALE_MODEL", "upscale", "upscale_model"),
                 ("stylize", "images", "upscale", "image")]
        blocks = [{"group": "Upscale", "color": CYAN, "nodes": ["upscale_model", "upscale"]}]
    prefix = "vtoonify/upscale_cheap" if cheap else "vtoonify/upscale"
    return {
        "nodes": {
            "note": _note(intro + FACE_CROP_TEXT + "\n\n" + MODELS_TEXT, height=500),
            "image": _load_image(EXAMPLE_IMAGE, "Load portrait"),
            "loader": _loader(D_CARTOON),
            "extract": _extract(26, False),
            "stylize": _stylize(0.5),
            "preview": {"type": "PreviewImage", "title": "Stylized (before upscaling)", "width": 260, "height": 260},
            **nodes,
            "save": _save(prefix, "Save upscaled"),
        },
        "links": [
            ("loader", "vtoonify_model", "extract", "vtoonify_model"),
            ("image", "IMAGE", "extract", "image"),
            ("loader", "vtoonify_model", "stylize", "vtoonify_model"),
            ("image", "IMAGE", "stylize", "images"),
            ("extract", "style", "stylize", "style"),
            ("stylize", "images", "preview", "images"),
            *links,
            ("upscale", "IMAGE", "save", "images"),
        ],
        "columns": [
            [{"group": None, "nodes": ["note"]}],
            [{"group": "Input", "color": BLUE, "nodes": ["image"]},
             {"group": "Models", "color": BROWN, "nodes": ["loader"]}],
            [{"group": "Stylize", "color": GREEN, "nodes": ["extract", "stylize"]}],
            [*blocks, {"group": None, "nodes": ["preview"]}],
            [{"group": "Save", "color": YELLOW, "nodes": ["save"]}],
        ],
    }


# ---------------------------------------------------------------------------------------------- (4) masks, composite

_MASK_CLASSES = ("skin", "brows", "eyes", "eyeglasses", "ears", "earrings", "nose", "mouth", "lips", "neck",
                 "necklace", "cloth", "hair", "hat", "background")


def _composite_spec(hair_skin: bool) -> dict:
    if hair_skin:
        ticked = {"skin", "hair"}
        intro = ("## Only hair and skin stylized\n\n"
                 "As *vtoonify_composite*, but **Face Parse** selects only `skin` and `hair`: eyes, brows, "
                 "nose, mouth and the background keep the (upscaled) original. Tick other classes "
                 "(ears, neck, cloth, ...) to widen the region.\n\n")
        prefix, save_title = "vtoonify/hair_skin", "Save composite (hair + skin)"
    else:
        ticked = {"skin", "brows", "eyes", "nose", "mouth", "lips", "ears"}
        intro = ("## Composite the stylized face back onto the frame\n\n"
                 "1. The original frame is enlarged 2x (**Upscale Image By**, lanczos; an upscale model works "
                 "too) and stylized in face mode: **Stylize Frames** also gives the region it shows "
                 "(**mask**) and its box (**crop_x, crop_y, crop_width, crop_height**) in frame pixels.\n"
                 "2. The stylized image is scaled to the box (**Upscale Image** with width/height from the "
                 "box).\n"
                 "3. **Face Parse** parses the frame: its **mask** selects the face classes ticked there.\n"
                 "4. The face mask is multiplied by the region mask (**MaskComposite**), cut to the box "
                 "(**CropMask**), grown a little (**GrowMask**) and feathered towards the box edges "
                 "(**FeatherMask**).\n"
                 "5. **ImageCompositeMasked** pastes the stylized face at (crop_x, crop_y).\n\n")
        prefix, save_title = "vtoonify/composite", "Save composite"
    parse_widgets = {f"mask_{c}": (c in ticked) for c in _MASK_CLASSES}
    return {
        "nodes": {
            "note": _note(intro + FACE_CROP_TEXT + "\n\n" + MODELS_TEXT, height=620),
            "image": _load_image(EXAMPLE_IMAGE, "Load portrait"),
            "upscale": {"type": "ImageScaleBy", "title": "Upscale original (lanczos 2x)", "width": 300,
                        "widgets": {"upscale_method": "lanczos", "scale_by": 2.0}},
            "loader": _loader(DEFAULT_CHECKPOINT),
            "extract": _extract(26, False),
            "stylize": _stylize(0.5),
            "fit": {"type": "ImageScale", "title": "Scale stylized to the box", "width": 300,
                    "widgets": {"upscale_method": "area", "crop": "disabled"}},
            "parse": {"type": "VToonifyFaceParse", "width": 300, "widgets": parse_widgets},
            "combine": {"type": "MaskComposite", "title": "Face mask x region mask", "width": 300,
                        "widgets": {"x": 0, "y": 0, "operation": "multiply"}},
            "crop_mask": {"type": "CropMask", "title": "Crop the mask to the box", "width": 300},
            "grow": {"type": "GrowMask", "width": 300, "widgets": {"expand": 4, "tapered_corners": True}},
            "feather": {"type": "FeatherMask", "width": 300,
                        "widgets": {"left": 24, "top": 24, "right": 24, "bottom": 24}},
            "mask_preview": {"type": "MaskPreview", "title": "Composite mask", "width": 240, "height": 260},
            "composite": {"type": "ImageCompositeMasked", "width": 300, "widgets": {"resize_source": False}},
            "stylized_preview": {"type": "PreviewImage", "title": "Stylized", "width": 240, "height": 260},
            "save": _save(prefix, save_title),
        },
        "links": [
            ("image", "IMAGE", "upscale", "image"),
            ("loader", "vtoonify_model", "extract", "vtoonify_model"),
            ("upscale", "IMAGE", "extract", "image"),
            ("loader", "vtoonify_model", "stylize", "vtoonify_model"),
            ("upscale", "IMAGE", "stylize", "images"),
            ("extract", "style", "stylize", "style"),
            ("stylize", "images", "stylized_preview", "images"),
            ("stylize", "images", "fit", "image"),
            ("stylize", "crop_width", "fit", "width"),
            ("stylize", "crop_height", "fit", "height"),
            ("loader", "face_parser", "parse", "face_parser"),
            ("upscale", "IMAGE", "parse", "images"),
            ("parse", "mask", "combine", "destination"),
            ("stylize", "mask", "combine", "source"),
            ("combine", "MASK", "crop_mask", "mask"),
            ("stylize", "crop_x", "crop_mask", "x"),
            ("stylize", "crop_y", "crop_mask", "y"),
            ("stylize", "crop_width", "crop_mask", "width"),
            ("stylize", "crop_height", "crop_mask", "height"),
            ("crop_mask", "MASK", "grow", "mask"),
            ("grow", "MASK", "feather", "mask"),
            ("feather", "MASK", "mask_preview", "mask"),
            ("upscale", "IMAGE", "composite", "destination"),
            ("fit", "IMAGE", "composite", "source"),
            ("stylize", "crop_x", "composite", "x"),
            ("stylize", "crop_y", "composite", "y"),
            ("feather", "MASK", "composite", "mask"),
            ("composite", "IMAGE", "save", "images"),
        ],
        "columns": [
            [{"group": None, "nodes": ["note"]}],
            [{"group": "1. Input, enlarged", "color": BLUE, "nodes": ["image", "upscale"]},
             {"group": "Models", "color": BROWN, "nodes": ["loader"]}],
            [{"group": "1. Stylize (face mode)", "color": GREEN, "nodes": ["extract", "stylize"]},
             {"group": None, "nodes": ["stylized_preview"]}],
            [{"group": "2. Fit to the box", "color": GREEN, "nodes": ["fit"]},
             {"group": "3. Face mask", "color": CYAN, "nodes": ["parse"]}],
            [{"group": "4. Combine, crop, grow, feather", "color": CYAN,
              "nodes": ["combine", "crop_mask", "grow", "feather"]},
             {"group": None, "nodes": ["mask_preview"]}],
            [{"group": "5. Composite", "color": YELLOW, "nodes": ["composite", "save"]}],
        ],
    }


def _paste_back_spec() -> dict:
    """The face chosen by Detect Faces, stylized, and put back into the frame by Paste Back through a
    Face Parse mask (one node where the composite took eight)."""
    ticked = {"skin", "brows", "eyes", "nose", "mouth", "lips", "ears"}
    intro = ("## Composite the stylized face back onto the frame\n\n"
             "1. The original frame is enlarged 2x (**Upscale Image By**, lanczos; an upscale model works too).\n"
             "2. **Detect Faces (VToonify)** chooses the face: by detector score, size, left to right (`index` "
             "0 = leftmost) or the official choice, or `every face`; the crop is fixed from the first frame or "
             "tracked. Its preview numbers the faces found.\n"
             "3. **Extract Style Code** and **Stylize Frames** take these `faces`: the chosen face is encoded "
             "and stylized (4x its crop).\n"
             "4. **Face Parse** on the frame gives the mask of the face classes ticked there.\n"
             "5. **Paste Back (VToonify)** scales each stylized crop onto its box in the frame and blends it "
             "through the mask, softened by `feather`; `color_match` evens the colours at the seam. Several "
             "faces or a tracked crop are pasted frame by frame.\n\n")
    parse_widgets = {f"mask_{c}": (c in ticked) for c in _MASK_CLASSES}
    return {
        "nodes": {
            "note": _note(intro + FACE_CROP_TEXT + "\n\n" + MODELS_TEXT, height=640),
            "image": _load_image(EXAMPLE_IMAGE, "Load portrait"),
            "upscale": {"type": "ImageScaleBy", "title": "Upscale original (lanczos 2x)", "width": 300,
                        "widgets": {"upscale_method": "lanczos", "scale_by": 2.0}},
            "loader": _loader(D_CARTOON),
            "detect": {"type": "VToonifyDetectFaces", "width": 300, "widgets": {
                "detector": "dlib", "face": "best score", "index": 0, "stylize": "the chosen face",
                "crop": "fixed (first frame)", "smoothing": 3.0, "face_padding": 200, "upsample": 1}},
            "faces_preview": {"type": "PreviewImage", "title": "Faces found", "width": 300, "height": 300},
            "extract": _extract(26, False),
            "stylize": _stylize(0.5),
            "stylized_preview": {"type": "PreviewImage", "title": "Stylized", "width": 300, "height": 300},
            "parse": {"type": "VToonifyFaceParse", "width": 300, "widgets": parse_widgets},
            "paste": {"type": "VToonifyPasteBack", "width": 300, "widgets": {"feather": 24.0, "color_match": 0.0}},
            "mask_preview": {"type": "MaskPreview", "title": "Composite mask", "width": 300, "height": 300},
            "save": _save("vtoonify/composite", "Save composite"),
        },
        "links": [
            ("image", "IMAGE", "upscale", "image"),
            ("upscale", "IMAGE", "detect", "images"),
            ("detect", "preview", "faces_preview", "images"),
            ("loader", "vtoonify_model", "extract", "vtoonify_model"),
            ("upscale", "IMAGE", "extract", "image"),
            ("detect", "faces", "extract", "faces"),
            ("loader", "vtoonify_model", "stylize", "vtoonify_model"),
            ("upscale", "IMAGE", "stylize", "images"),
            ("extract", "style", "stylize", "style"),
            ("detect", "faces", "stylize", "faces"),
            ("stylize", "images", "stylized_preview", "images"),
            ("loader", "face_parser", "parse", "face_parser"),
            ("upscale", "IMAGE", "parse", "images"),
            ("upscale", "IMAGE", "paste", "images"),
            ("stylize", "images", "paste", "stylized"),
            ("stylize", "faces", "paste", "faces"),
            ("parse", "mask", "paste", "mask"),
            ("paste", "mask", "mask_preview", "mask"),
            ("paste", "images", "save", "images"),
        ],
        "columns": [
            [{"group": None, "nodes": ["note"]}],
            [{"group": "1. Input, enlarged", "color": BLUE, "nodes": ["image", "upscale"]},
             {"group": "Models", "color": BROWN, "nodes": ["loader"]}],
            [{"group": "2. Choose the face", "color": CYAN, "nodes": ["detect"]},
             {"group": None, "nodes": ["faces_preview"]}],
            [{"group": "3. Stylize the face", "color": GREEN, "nodes": ["extract", "stylize"]},
             {"group": None, "nodes": ["stylized_preview"]}],
            [{"group": "4. Face mask", "color": CYAN, "nodes": ["parse"]}],
            [{"group": "5. Paste back", "color": YELLOW, "nodes": ["paste"]},
             {"group": None, "nodes": ["mask_preview"]}],
            [{"group": "Save", "color": YELLOW, "nodes": ["save"]}],
        ],
    }


# ---------------------------------------------------------------------------------------------- (5) reference style

REFERENCE_STYLE = {
    "nodes": {
        "note": _note(
            "## Style code from a reference portrait\n\n"
            "**Extract Style Code** does not have to see the frames you stylize: here it reads a second "
            "portrait (**Load reference portrait**), and **Stylize Frames** applies that code to the first "
            "image. With VToonify-T the whole W+ code comes from the reference (its colours and look); with a "
            "VToonify-D checkpoint the exemplar (`style_id`) gives the structure layers and the reference the "
            "colour layers (colour_transfer off).\n\n"
            "Use the same model for both nodes: a VToonify-T code is refused by a VToonify-D model and vice "
            "versa.\n\n" + FACE_CROP_TEXT + "\n\n" + MODELS_TEXT, height=520),
        "image": _load_image(EXAMPLE_IMAGE, "Load portrait (to stylize)"),
        "reference": _load_image(REFERENCE_IMAGE, "Load reference portrait (style)"),
        "loader": _loader(DEFAULT_CHECKPOINT),
        "extract": _extract(26, False, "Extract Style Code (reference)"),
        "aligned": {"type": "PreviewImage", "title": "Aligned reference face", "width": 240, "height": 260},
        "stylize": _stylize(0.5),
        "save": _save("vtoonify/reference_style", "Save stylized"),
    },
    "links": [
        ("loader", "vtoonify_model", "extract", "vtoonify_model"),
        ("reference", "IMAGE", "extract", "image"),
        ("extract", "aligned_face", "aligned", "images"),
        ("loader", "vtoonify_model", "stylize", "vtoonify_model"),
        ("image", "IMAGE", "stylize", "images"),
        ("extract", "style", "stylize", "style"),
        ("stylize", "images", "save", "images"),
    ],
    "columns": [
        [{"group": None, "nodes": ["note"]}],
        [{"group": "Inputs", "color": BLUE, "nodes": ["image", "reference"]},
         {"group": "Models", "color": BROWN, "nodes": ["loader"]}],
        [{"group": "Style from the reference", "color": PURPLE, "nodes": ["extract", "aligned"]}],
        [{"group": "Stylize the portrait", "color": GREEN, "nodes": ["stylize"]},
         {"group": "Save", "color": YELLOW, "nodes": ["save"]}],
    ],
}

# ---------------------------------------------------------------------------------------------- (6) merged styles

#: the panels of the merge workflow, left to right: (key suffix, panel title)
MERGE_PANELS = (("a", "A: cartoon"), ("half", "0.5: the average"), ("swap", "A's shapes, B's textures"),
                ("b", "B: arcane"))


def _panel_links(key: str, model: str) -> list[tuple[str, str, str, str]]:
    """A panel of the merge workflow: the model's own style code of the portrait, and the portrait stylized."""
    return [(model, "vtoonify_model", f"extract_{key}", "vtoonify_model"), ("image", "IMAGE", f"extract_{key}", "image"),
            (model, "vtoonify_model", f"stylize_{key}", "vtoonify_model"), ("image", "IMAGE", f"stylize_{key}", "images"),
            (f"extract_{key}", "style", f"stylize_{key}", "style")]


MERGE_STYLES = {
    "nodes": {
        "note": _note(
            "## Two styles merged\n\n"
            "**Merge VToonify Models** blends two VToonify-D checkpoints (or two VToonify-T) tensor by tensor: "
            "`(1 - r) * A + r * B`, exactly A at `ratio` 0 and exactly B at 1. Every part input at -1 takes "
            "`ratio`; set a part to its own value to blend layer by layer, as Toonify's layer swapping does.\n\n"
            "Side by side, left to right:\n"
            "1. **A** (cartoon) as loaded;\n"
            "2. **ratio 0.5**: the average of the two models;\n"
            "3. **A's shapes, B's textures**: ratio 0 (all of A) but `decoder_512` and `decoder_1024`, the "
            "finest decoder layers, at 1 (B's);\n"
            "4. **B** (arcane) as loaded.\n\n"
            "Each model extracts its own style code (exemplar 26; a merged model has the exemplars of `exstyles`). "
            "The encoder, face parser and precision of a merge are model A's. A merged model is a new network as "
            "large as one checkpoint. **Save VToonify Model** keeps one: here the *A's shapes, B's textures* "
            "merge, written as `models/vtoonify/vtoonify_merged/shapes_a_textures_b.safetensors`, which Load "
            "VToonify Model lists at once (with `overwrite` off an existing file with other weights is refused, "
            "not replaced).\n\n" + FACE_CROP_TEXT + "\n\n" + MODELS_TEXT, height=760),
        "image": _load_image(EXAMPLE_IMAGE, "Load portrait"),
        "loader_a": {**_loader(D_CARTOON), "title": "Load VToonify Model (A: cartoon)"},
        "loader_b": {**_loader(D_ARCANE), "title": "Load VToonify Model (B: arcane)"},
        "merge_half": _merge("Merge: ratio 0.5", 0.5),
        "merge_swap": _merge("Merge: A's shapes, B's textures", 0.0, decoder_512=1.0, decoder_1024=1.0),
        **{f"extract_{key}": _extract(26, False, f"Extract Style Code ({title})") for key, title in MERGE_PANELS},
        **{f"stylize_{key}": _stylize(0.5, f"Stylize Frames ({title})") for key, title in MERGE_PANELS},
        "stitch_1": _stitch("Stitch Images (A | 0.5)"),
        "stitch_2": _stitch("Stitch Images (+ shapes/textures)"),
        "stitch_3": _stitch("Stitch Images (+ B)"),
        "save": _save("vtoonify/merge_styles", "Save side by side"),
        "save_model": {"type": "VToonifySaveModel", "title": "Save VToonify Model (A's shapes, B's textures)",
                       "width": 320, "widgets": {"filename_prefix": "vtoonify_merged/shapes_a_textures_b",
                                                 "overwrite": False}},
    },
    "links": [
        ("loader_a", "vtoonify_model", "merge_half", "model_a"),
        ("loader_b", "vtoonify_model", "merge_half", "model_b"),
        ("loader_a", "vtoonify_model", "merge_swap", "model_a"),
        ("loader_b", "vtoonify_model", "merge_swap", "model_b"),
        *_panel_links("a", "loader_a"),
        *_panel_links("half", "merge_half"),
        *_panel_links("swap", "merge_swap"),
        *_panel_links("b", "loader_b"),
        ("stylize_a", "images", "stitch_1", "image1"),
        ("stylize_half", "images", "stitch_1", "image2"),
        ("stitch_1", "IMAGE", "stitch_2", "image1"),
        ("stylize_swap", "images", "stitch_2", "image2"),
        ("stitch_2", "IMAGE", "stitch_3", "image1"),
        ("stylize_b", "images", "stitch_3", "image2"),
        ("stitch_3", "IMAGE", "save", "images"),
        ("merge_swap", "vtoonify_model", "save_model", "vtoonify_model"),
    ],
    "columns": [
        [{"group": None, "nodes": ["note"]}],
        [{"group": "Input", "color": BLUE, "nodes": ["image"]},
         {"group": "Models A and B", "color": BROWN, "nodes": ["loader_a", "loader_b"]}],
        [{"group": "Merge", "color": CYAN, "nodes": ["merge_half", "merge_swap"]},
         {"group": "Keep a merge", "color": YELLOW, "nodes": ["save_model"]}],
        [{"group": "Each model's style code", "color": PURPLE, "nodes": [f"extract_{k}" for k, _ in MERGE_PANELS]}],
        [{"group": "Stylize", "color": GREEN, "nodes": [f"stylize_{k}" for k, _ in MERGE_PANELS]}],
        [{"group": "Side by side", "color": YELLOW, "nodes": ["stitch_1", "stitch_2", "stitch_3", "save"]}],
    ],
}

# ---------------------------------------------------------------------------------------------- (7) fast student

#: Train VToonify Student's file name prefix in the student template (models/vtoonify_students/<prefix>_NNNNN)
STUDENT_PREFIX = "student_example_clip"
#: the frames of the clip the student template trains on (Train VToonify Student's video_frames, from frame 0):
#: "a few hundred" of a real clip; the 8-frame example gives all it has
STUDENT_FRAMES = 300
#: Load VToonify Student (muted) in the student template: the first file Train VToonify Student writes there
STUDENT_FILE = f"{STUDENT_PREFIX}_00001.safetensors"
MUTED = 2  # LiteGraph's LGraphEventMode.NEVER (Ctrl+M): left out of the prompt


def _student_spec() -> dict:
    """Train a student (issue 16) on the first frames of the example clip, read from the VIDEO, with
    VToonify as the teacher, then stream the whole clip through it (Stylize Video (Student)) into Save
    Video; Stylize Frames (Student) on a still; a muted Load VToonify Student for running a saved one later."""
    intro = (
        "## Train a fast student, stylize the whole clip\n\n"
        "1. **Load Video**: the clip, with its sound. Nothing loads it whole: the nodes below read it from its "
        "file.\n"
        "2. **Extract Style Code** reads the face of a still of the person (**Load Image**, the example portrait; "
        "exemplar `style_id` 26).\n"
        "3. **Train VToonify Student** learns from the first frames of the VIDEO (`video_start` 0, `video_frames` "
        f"{STUDENT_FRAMES}: here all 8 of the example; give a few hundred of a long clip). It stylizes them once "
        "with VToonify (the teacher) and trains a small two-stage network to reproduce them: a U-Net (about 6M "
        "parameters) and a refiner that keeps consecutive frames coherent. Its progress bar shows a preview with "
        "the loss; Cancel stops it and still keeps the student trained so far. The student is written to "
        f"`ComfyUI/models/vtoonify_students/{STUDENT_PREFIX}_NNNNN.safetensors`. `steps` 1000 suits the example; "
        "use 2000-5000 for a real clip.\n"
        "4. **Stylize Video (Student)** streams the whole clip through the student, `frames_per_chunk` frames at a "
        "time, many times faster than Stylize Video: memory stays flat however long the clip is, and every frame, "
        "the frame rate and the sound are kept. " + VIDEO_SAVE_TEXT + "\n"
        "5. **Stylize Frames (Student)** runs the student on IMAGE frames: here the still portrait, framed like "
        "the clip.\n\n"
        "**Later, without training again**: unmute **Load VToonify Student** (select it, Ctrl+M), choose the "
        "saved student and connect it to Stylize Video (Student) in place of Train's output.\n\n"
        "The frames are used whole (no face crop): the output is 4x the frame and the sides must be multiples "
        "of 8; scale a large clip down first (Get Video Components, Upscale Image By, Create Video). A student "
        "only knows the framing and the look of the frames it learnt: train it on the clip it will stylize.\n\n")
    return {
        "nodes": {
            "note": _note(intro + MODELS_TEXT, height=900),
            "video": _load_video(),
            "image": _load_image(EXAMPLE_IMAGE, "Load Image (the face, for the style)"),
            "loader": _loader(DEFAULT_CHECKPOINT),
            "extract": _extract(),
            "train": {"type": "VToonifyTrainStudent", "width": 320, "widgets": {
                "style_degree": 0.5, "steps": 1000, "refiner": True, "frames_per_step": 4, "crop_size": 96, "seed": 0,
                "control_after_generate": "fixed", "filename_prefix": STUDENT_PREFIX, "video_start": 0,
                "video_frames": STUDENT_FRAMES}},
            "load_student": {"type": "VToonifyLoadStudent", "title": "Load VToonify Student (muted: Ctrl+M)",
                             "width": 320, "mode": MUTED, "widgets": {
                                 "student_name": STUDENT_FILE, "device": "auto", "precision": "auto"}},
            "stylize": {"type": "VToonifyStylizeVideoStudent", "width": 320, "widgets": {
                "frames_per_chunk": 16, "refine": True, "crf": 18, "preview_frames": 4}},
            "save": _save_video("vtoonify/student_video", "Save Video (mp4 with sound)"),
            "stylize_still": {"type": "VToonifyStylizeFramesStudent", "width": 300,
                              "widgets": {"frames_per_chunk": 8, "refine": True}},
            "still": {"type": "PreviewImage", "title": "The portrait, by the student", "width": 260, "height": 280},
        },
        "links": [
            ("loader", "vtoonify_model", "extract", "vtoonify_model"),
            ("image", "IMAGE", "extract", "image"),
            ("loader", "vtoonify_model", "train", "vtoonify_model"),
            ("extract", "style", "train", "style"),
            ("video", "VIDEO", "train", "video"),
            ("train", "vtoonify_student", "stylize", "vtoonify_student"),
            ("video", "VIDEO", "stylize", "video"),
            ("stylize", "video", "save", "video"),
            ("train", "vtoonify_student", "stylize_still", "vtoonify_student"),
            ("image", "IMAGE", "stylize_still", "images"),
            ("stylize_still", "images", "still", "images"),
        ],
        "columns": [
            [{"group": None, "nodes": ["note"]}],
            # Load Video's player takes the node's height once the clip is loaded: nothing right below it
            [{"group": "1. Input video", "color": BLUE, "nodes": ["video"]},
             {"group": "Models", "color": BROWN, "nodes": ["loader"]}],
            [{"group": "2. Style code (a still of the face)", "color": PURPLE, "nodes": ["image", "extract"]}],
            # Train shows what it saved when it has run: nothing below it
            [{"group": "Later: a saved student", "color": CYAN, "nodes": ["load_student"]},
             {"group": "3. Train the student on the first frames", "color": PURPLE, "nodes": ["train"]}],
            # the node shows its video when it has run: nothing below it
            [{"group": "4. Stylize the whole clip, streamed", "color": GREEN, "nodes": ["stylize"]}],
            [{"group": "5. The portrait, by the student", "color": GREEN, "nodes": ["stylize_still", "still"]},
             {"group": "Save the video", "color": YELLOW, "nodes": ["save"]}],
        ],
    }


#: the title of each workflow, which is also its UI file's name (``workflows/<title>.json`` and
#: ``.jpg``): the template browser of ComfyUI 0.30 (frontend 1.47) titles a custom-node template by its
#: file name and reads no title from anywhere else. The API twin keeps the short name
#: (``workflows/api/<name>.json``). Titles are valid file names on Windows too.
TITLES: dict[str, str] = {
    "vtoonify_video_frames": "Video with sound, frame by frame",
    "vtoonify_video_stream": "Long video with sound, streamed",
    "vtoonify_style_keyframes": "Styles changing over a video",
    "vtoonify_text_styles": "Styles edited by text over a video",
    "vtoonify_d_exemplar": "VToonify-D exemplar styles",
    "vtoonify_upscale": "Upscale with a model",
    "vtoonify_upscale_cheap": "Upscale by resizing",
    "vtoonify_composite": "Composite onto the frame",
    "vtoonify_hair_skin": "Stylize hair and skin only",
    "vtoonify_reference_style": "Style from a reference",
    "vtoonify_merge_styles": "Merge two styles",
    "vtoonify_student": "Train a fast student, stylize the clip",
}

WORKFLOWS: dict[str, dict] = {
    "vtoonify_video_frames": VIDEO_FRAMES,
    "vtoonify_video_stream": VIDEO_STREAM,
    "vtoonify_style_keyframes": STYLE_KEYFRAMES,
    "vtoonify_text_styles": TEXT_STYLES,
    "vtoonify_d_exemplar": D_EXEMPLAR,
    "vtoonify_upscale": _upscale_spec(cheap=False),
    "vtoonify_upscale_cheap": _upscale_spec(cheap=True),
    "vtoonify_composite": _paste_back_spec(),
    "vtoonify_hair_skin": _composite_spec(hair_skin=True),
    "vtoonify_reference_style": REFERENCE_STYLE,
    "vtoonify_merge_styles": MERGE_STYLES,
    "vtoonify_student": _student_spec(),
}
