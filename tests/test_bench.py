"""The speed bench runs in CI on CPU (``--quick``) and prints its table; no assertion on times."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_pipeline_quick_prints_every_stage_and_switch(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_pipeline.py"), "--quick", "--profile",
                           "--dtypes", "fp32", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    print(out)
    for stage in ("face parse", "smooth parsing (DIS)", "style extraction (pSp)", "generator plain", "generator bake",
                  "generator +channels_last", "generator +fold", "generator fast", "end to end", "pipeline (host frames)"):
        assert stage in out, f"no {stage!r} row"
    assert "vs plain" in out and "# profile:" in out
    files = list(tmp_path.glob("pipeline-cpu-*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    assert {"machine", "torch", "date", "rows", "profiles"} <= set(result)
    kinds = {r.get("kind") for r in result["rows"]}
    assert {"vtoonify_t", "vtoonify_d"} <= kinds
    for row in result["rows"]:
        assert row["seconds"] > 0 and row["peak_mb"] > 0
        if row["stage"].startswith("generator") and row["stage"] != "generator plain":
            assert row["speedup"] == pytest.approx(row["plain_seconds"] / row["seconds"])
    assert result["profiles"][0]["ops"], "empty profile"


@pytest.mark.slow
def test_bench_student_quick_prints_speed_ratios_quality_and_coherence():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_student.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    print(out)
    assert "8 frames in batches of 1" in out and "VToonify-D" in out and "G+R" in out
    assert "held-out PSNR G+R" in out and "warping error (DIS): teacher" in out and "28 dB on held-out" in out
