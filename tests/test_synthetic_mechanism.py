"""`benchmarks/bench_mechanism.py --quick`: the retrieval study's plumbing end to end (tiny world, 3 steps, 1 seed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_study_writes_every_run_table_and_plot(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CACMI_HF_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, str(REPO / "benchmarks" / "bench_mechanism.py"), "--quick", "--no-java", "--jobs", "2",
               "--work-dir", str(tmp_path / "study")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = tmp_path / "study" / "results"
    data = json.loads((results / "mechanism.json").read_text())
    runs = data["runs"]
    # PDVC once, the four retrieval variants once per bank of the dial
    assert sorted((r["bank"], r["variant"]) for r in runs) == sorted(
        [("none", "pdvc")] + [(b, v) for b in ("oracle", "swap 0.5", "clip", "random")
                              for v in ("cm2", "cacmi", "cacmi_no_cfe", "cacmi_no_cfa")])
    for run in runs:
        assert run["steps"] == 3 and 0.0 <= run["scores"]["F1"] <= 1.0 and run["scores"]["METEOR"] is None
        uses_cfe = run["variant"] in ("cacmi", "cacmi_no_cfa")
        assert (run["grad_norm"]["cfe"] > 0) == uses_cfe  # CFE's parameters get gradient whenever CFE is on
        assert ("cfe" in run) == uses_cfe
        if run["variant"] == "pdvc":
            assert "retrieval" not in run and run["grad_norm"]["text_attention"] == 0.0
            continue
        accuracy = run["retrieval"]["acc@1"]
        if run["bank"] == "oracle":
            assert accuracy == 1.0  # every pseudo-event inside an event gets that event's sentence
        elif run["bank"] == "random":
            assert accuracy < 0.5
        assert 0.0 <= run["boundary"]["f1"] <= 1.0
    assert (results / "mechanism.png").stat().st_size > 10_000
    table = (results / "mechanism.md").read_text()
    assert "| ambiguous | oracle | CACMI | 1 |" in table and "CACMI >= CM2 >= PDVC" in table
