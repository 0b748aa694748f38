"""The bad-input campaign (``scripts/bad_inputs.py``) on the session's real ComfyUI 0.30 server.

A representative subset of the campaign's cases (every category, the same code as the full run
that writes ``docs/bad_inputs.md``) goes through ``POST /prompt`` and the ``/vtoonify/`` routes:
no case may crash the server (HTTP 5xx, no answer) or hang; every case in :data:`KNOWN_CLEAR`,
whose message was made clear, must stay clear, and every case in :data:`KNOWN_OK` (an input
that must be accepted) must still run. The verdict rules themselves are checked without a server
(a raw message is not clear, and a regression of a known-clear case fails the check).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _load_script():
    """``scripts/bad_inputs.py`` as the module ``bad_inputs`` (the one the host conftest loads too)."""
    if "bad_inputs" not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "scripts" / "bad_inputs.py"
        spec = importlib.util.spec_from_file_location("bad_inputs", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bad_inputs"] = module
        spec.loader.exec_module(module)
    return sys.modules["bad_inputs"]


bad_inputs = _load_script()
cases_mod = bad_inputs.cases_mod

#: cases whose message is clear now: a change that makes one unclear (or a crash, a hang, a run)
#: is a regression
KNOWN_CLEAR = (
    "model_random_bytes", "model_parser_as_generator", "model_generator_as_encoder", "model_official_missing",
    "model_not_listed", "exstyle_missing", "exstyle_nan", "exstyle_random_bytes", "exstyle_none_with_d",
    "style_id_past_end", "style_t_into_d", "exemplar_no_face", "extract_no_face", "style_keyframed_into_mix",
    "keyframes_degree_2", "keyframes_garbage", "images_nan_stylize", "images_empty_batch_parse",
    "images_two_channel_stylize", "images_huge_whole_frame", "images_no_face_face_mode",
    "parsing_more_maps_than_frames", "parsing_smooth_count_mismatch", "numbers_style_degree_nan",
    "numbers_batch_size_65", "wiring_mask_into_images", "wiring_switch_string_into_style", "video_empty_path",
    "video_still_image", "video_output_avi", "routes_download_nested", "routes_styles_exstyle_traversal",
    "routes_styles_corrupt_exstyle",
)
#: inputs that must be accepted
KNOWN_OK = ("images_four_channel_stylize",)
#: not clear yet (see docs/bad_inputs.md): run for crashes and hangs only, so that fixing their
#: messages needs no change here (move a fixed one to KNOWN_CLEAR)
NOT_CLEAR_YET = ("model_truncated", "exstyle_pickled_code", "style_mix_first_after_last", "keyframes_duplicate_frame",
                 "images_zero_size_stylize", "numbers_batch_size_text", "video_random_bytes", "video_folder_absolute",
                 "routes_styles_traversal")
SUBSET = KNOWN_CLEAR + KNOWN_OK + NOT_CLEAR_YET


def check_results(results, known_clear=KNOWN_CLEAR, known_ok=KNOWN_OK) -> None:
    """AssertionError naming every crash, hang, known-clear case that is not clear, and known-ok case
    that did not run."""
    problems = []
    for r in results:
        if r.verdict in ("crash", "hang"):
            problems.append(f"{r.id}: {r.verdict}: {r.seen}")
        elif r.id in known_clear and r.verdict != "clear":
            problems.append(f"{r.id}: was clear, now {r.verdict} ({r.reason or 'accepted'}): {r.seen}")
        elif r.id in known_ok and r.verdict != "ok":
            problems.append(f"{r.id}: must run, got {r.verdict}: {r.seen}")
    assert not problems, "bad-input regressions:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------- without a server


def test_subset_names_real_cases_of_every_category():
    ids = {c.id: c for c in cases_mod.CASES}
    assert len(ids) == len(cases_mod.CASES) >= 110
    assert set(SUBSET) <= set(ids), set(SUBSET) - set(ids)
    assert len(set(SUBSET)) == len(SUBSET)
    assert {ids[i].category for i in SUBSET} == {c.category for c in cases_mod.CASES}
    assert all(ids[i].expect != "ok" for i in KNOWN_CLEAR) and all(ids[i].expect != "error" for i in KNOWN_OK)


@pytest.mark.parametrize("text, exception_type, verdict, reason", [
    ("Stylize Frames: style_degree: must be between 0 and 1, got nan.", "", "clear", ""),
    ("Load VToonify Model: checkpoint: <...>/x.pt: not a PyTorch checkpoint. Download it again.", "", "clear", ""),
    ("Stylize Frames: images: 'NoneType' object has no attribute 'shape'", "", "unclear", "NoneType"),
    ("Stylize Frames: images: frame 3: Traceback (most recent call last): use fewer frames", "", "unclear",
     "Traceback"),
    ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 200 GB: use fewer frames", "", "unclear",
     "can't allocate"),
    ("'generator'", "KeyError", "unclear", "KeyError"),
    ("Style Mix: first_layer: 10 is after last_layer 5.", "", "unclear", "does not say what to do"),
    ("Something went wrong, use another file.", "", "unclear", "names no input"),
    # the node's display name is no advice ("Load" in "Load VToonify Model")
    ("Load VToonify Model: checkpoint: this file is damaged.", "", "unclear", "does not say what to do"),
])
def test_judge_rules(text, exception_type, verdict, reason):
    names = {"checkpoint", "images", "style_degree", "first_layer", "last_layer"}
    got = bad_inputs.judge("error", text, names, exception_type, {"Load VToonify Model", "Style Mix"})
    assert got[0] == verdict and reason in got[1], got


def test_judge_keeps_crash_hang_ok():
    for outcome in ("ok", "crash", "hang"):
        assert bad_inputs.judge(outcome, "whatever", set())[0] == outcome


def test_a_regressed_clear_case_fails_the_check():
    R = bad_inputs.Result
    fine = [R("exstyle_nan", "exstyle", "", "error", "clear", "msg", 200),
            R("images_four_channel_stylize", "images", "", "ok", "ok", "(ran)", 200),
            R("model_truncated", "models", "", "error", "unclear", "msg", 200, reason="raw text 'RuntimeError'")]
    check_results(fine)
    for regressed in (R("exstyle_nan", "exstyle", "", "error", "unclear", "KeyError: 'x'", 200, reason="raw"),
                      R("exstyle_nan", "exstyle", "", "error", "ok", "(ran)", 200),
                      R("images_four_channel_stylize", "images", "", "ok", "clear", "refused", 200),
                      R("model_truncated", "models", "", "error", "hang", "no result", 200),
                      R("routes_unknown", "routes", "", "error", "crash", "HTTP 500", 500)):
        with pytest.raises(AssertionError, match=regressed.id):
            check_results(fine + [regressed])


def test_the_recorded_campaign_agrees():
    """docs/bad_inputs.json (the last full run) has every known-clear case clear and every known-ok case ok."""
    import json

    recorded = {c["id"]: c["verdict"] for c in json.loads(bad_inputs.DOCS_JSON.read_text())["cases"]}
    assert {i: recorded.get(i) for i in KNOWN_CLEAR if recorded.get(i) != "clear"} == {}
    assert {i: recorded.get(i) for i in KNOWN_OK if recorded.get(i) != "ok"} == {}


def test_readme_count_matches_the_table():
    import json
    import re

    doc = json.loads(bad_inputs.DOCS_JSON.read_text())
    t, n = doc["totals"], len(doc["cases"])
    assert n == doc["meta"]["cases"] >= 110 and sum(t.values()) == n
    begin, end = bad_inputs.README_MARKERS
    readme = bad_inputs.README.read_text()
    m = re.search(re.escape(begin) + r"(.*?)" + re.escape(end), readme, re.S)
    assert m, "README.md has no bad-input count"
    assert m.group(1).startswith(f"{n} bad inputs tried: {t['clear']} give a clear error"), m.group(1)
    assert f"**{n} bad inputs tried, {t['clear']} give a clear error" in bad_inputs.DOCS_MD.read_text()


# ---------------------------------------------------------------------------------------------- on the server


@pytest.fixture(scope="module")
def campaign(comfy_server, official_dir, vtoonify_d_path, vtoonify_t_path, psp_path, bisenet_path,
             tmp_path_factory):
    """The campaign's files on the session server (removed afterwards) and a :class:`Campaign` there."""
    ctx = cases_mod.prepare(comfy_server.base, official_dir, tmp_path_factory.mktemp("outside"),
                            roots=[bad_inputs.ROOT])
    try:
        yield bad_inputs.Campaign(bad_inputs.Client(comfy_server.url), ctx, comfy_server.object_info(),
                                  default_timeout=120)
    finally:
        for folder in (ctx.models, ctx.inputs, comfy_server.base / "output" / cases_mod.SUB):
            shutil.rmtree(folder, ignore_errors=True)
        # the cases' prompts stay in ComfyUI's queue history, and some hold NaN (e.g. style_degree NaN): the
        # frontend's job list cannot parse that JSON and logs an error in every later page of the session
        for path in ("/queue", "/history"):
            comfy_server.request("POST", path, json.dumps({"clear": True}).encode(),
                                 {"Content-Type": "application/json"}, timeout=30)


def test_subset_no_crash_no_hang_clear_stays_clear(campaign, comfy_server):
    by_id = {c.id: c for c in cases_mod.CASES}
    results = campaign.run([by_id[i] for i in SUBSET])
    check_results(results)
    assert comfy_server.get_json("/system_stats")["system"]["comfyui_version"] == "0.30.0"
    huge = next(r for r in results if r.id == "images_huge_whole_frame")
    assert huge.seconds < 30, f"a 4096x4096 frame took {huge.seconds} s to be refused"
