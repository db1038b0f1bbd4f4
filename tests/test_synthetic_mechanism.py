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


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_mechanism", REPO / "benchmarks" / "bench_mechanism.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(variant, bank, seed, cider):
    return {"world": "ambiguous", "bank": bank, "variant": variant, "seed": seed,
            "scores": {"F1": 0.5, "METEOR": None, "CIDEr": cider, "SODA_c": None}}


def test_paired_differences_hand_worked():
    bench = _bench_module()
    records = [_record("cacmi", "oracle", s, c) for s, c in enumerate([0.50, 0.52, 0.54])]
    records += [_record("cm2", "oracle", s, c) for s, c in enumerate([0.40, 0.41, 0.42])]
    records += [_record("pdvc", "none", s, c) for s, c in enumerate([0.45, 0.36, 0.39])]
    rows = {(r["a"], r["b"], r["metric"]): r for r in bench.paired(records, ["oracle"])}
    # CACMI - CM2 CIDEr per seed: 10, 11, 12 points -> mean 11, sd 1, 95 % half-width 4.303 / sqrt(3) = 2.484
    r = rows[("cacmi", "cm2", "CIDEr")]
    assert r["differences"] == pytest.approx([10.0, 11.0, 12.0])
    assert (r["mean"], r["sd"], r["call"]) == (pytest.approx(11.0), pytest.approx(1.0), ">")
    assert r["ci95"] == pytest.approx(4.303 / 3 ** 0.5)
    # CM2 - PDVC (PDVC's bank-free runs pair with every bank): -5, 5, 3 -> mean 1, sd 5.29: a tie
    r = rows[("cm2", "pdvc", "CIDEr")]
    assert r["differences"] == pytest.approx([-5.0, 5.0, 3.0]) and r["call"] == "tie"
    # equal F1 everywhere: a zero difference is a tie, and a metric that was not computed has no row
    assert rows[("cacmi", "cm2", "F1")]["call"] == "tie" and ("cacmi", "cm2", "METEOR") not in rows
    # a pair with a missing variant (no ablation runs here) gives no row; one seed alone gives none either
    assert not any(a == "cacmi" and b == "cacmi_no_cfe" for a, b, _ in rows)
    assert bench.paired(records[:1] + records[3:4]) == []
    table = bench.paired_table(bench.paired(records, ["oracle"]))
    assert "| ambiguous | oracle | CACMI − CM2 | 3 | +0.0 ± 0.0 (tie) | — | +11.0 ± 1.0 (>) | — |" in table
