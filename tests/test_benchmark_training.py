"""benchmarks/training.py: the loss-agreement and rate arithmetic worked by hand, and a tiny CPU run's JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_training", ROOT / "benchmarks" / "training.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_training"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_loss_agreement_by_hand(bench):
    base = [0.6931, 0.6900, 0.6800]
    # limits: 0.01 + 0.02 * |b| = 0.023862, 0.0238, 0.0236; diffs 0, 0.009, 0.023 -> all within
    near = bench.loss_agreement(base, [0.6931, 0.6990, 0.6570], steps=3, atol=0.01, rtol=0.02)
    assert near["agree"] is True and near["steps"] == 3
    # after step 1, informative = strictly between atol and ln 2 - atol = 0.683147: 0.69 is not, 0.68 is
    assert near["informative_steps"] == 1
    assert near["max_abs_diff"] == pytest.approx(0.023)
    # step 3 off by 0.0240 > 0.0236: disagrees; but only the first 2 steps compared: agrees
    far = [0.6931, 0.6990, 0.6560]
    assert bench.loss_agreement(base, far, steps=3, atol=0.01, rtol=0.02)["agree"] is False
    assert bench.loss_agreement(base, far, steps=2, atol=0.01, rtol=0.02)["agree"] is True
    # a run that logged nothing never counts as agreeing
    assert bench.loss_agreement(base, [], steps=3, atol=0.01, rtol=0.02) == {
        "steps": 0, "atol": 0.01, "rtol": 0.02, "max_abs_diff": None, "informative_steps": 0, "agree": False}
    # a curve that falls to 0 at once (or stays at ln 2) agrees with its copy but informs nothing
    for flat in ([0.6931, 0.0, 0.0], [0.6931, 0.6931, 0.6930]):
        check = bench.loss_agreement(flat, flat, steps=3, atol=0.01, rtol=0.02)
        assert check["agree"] is True and check["informative_steps"] == 0


def test_end_to_end_rate_counts_the_precompute_pass(bench):
    # 80 pairs at 40 pairs/s = 2 s, plus a 1 s reference pass: 80 / 3 s
    assert bench.end_to_end_rate(80, 40.0, 1.0) == pytest.approx(26.6667, abs=1e-4)
    assert bench.end_to_end_rate(80, 40.0, 0.0) == 40.0
    assert bench.end_to_end_rate(80, None, 1.0) is None


def test_compare_ratios_by_hand(bench):
    plan = bench.Plan(shapes={}, modes=["full"], compare_steps=2)
    base = {"shape": "s", "mode": "full", "batch": 8, "pairs_per_s": 20.0, "pairs_per_s_steady": 25.0,
            "peak_gib": 10.0, "losses": [0.6931, 0.68]}
    fast = {"variant": "safepref", "batch": 8, "pairs_per_s": 45.0, "pairs_per_s_steady": 50.0, "peak_gib": 8.0,
            "losses": [0.6931, 0.70]}
    row = bench.compare(base, fast, plan)
    assert row["speedup"] == 2.25 and row["speedup_steady"] == 2.0 and row["memory_ratio"] == 0.8
    assert row["goal_2x"] and row["goal_memory"]
    # 0.70 vs 0.68: 0.02 <= 0.01 + 0.02 * 0.68 = 0.0236: agrees
    assert row["goal_loss"] is True and row["loss"]["max_abs_diff"] == pytest.approx(0.02)
    saturated = bench.compare(dict(base, losses=[0.6931, 0.0]), dict(fast, losses=[0.6931, 0.0]), plan)
    assert saturated["loss"]["agree"] is True and saturated["goal_loss"] is None  # says nothing either way
    other_batch = dict(fast, batch=32, pairs_per_s=30.0, peak_gib=12.0)
    row = bench.compare(base, other_batch, plan)
    assert row["loss"] is None and row["goal_loss"] is None
    assert row["speedup"] == 1.5 and not row["goal_2x"] and row["memory_ratio"] == 1.2 and not row["goal_memory"]


def test_tiny_run_writes_json_and_markdown(bench, tmp_path, tiny_model_dir):
    out = tmp_path / "training.json"
    code = bench.main(["--tiny", "--modes", "full", "--variants", "baseline,safepref-same-order",
                       "--tiny-model", f"random:tiny-llama?tokenizer={tiny_model_dir}", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["complete"] is True and report["plan"]["steps"] == 3
    assert [(r["mode"], r["variant"]) for r in report["results"]] == [("full", "baseline"),
                                                                     ("full", "safepref-same-order")]
    for row in report["results"]:
        assert "error" not in row, row
        assert row["steps"] == 3 and len(row["losses"]) == 3 and row["pairs_per_s"] > 0
        assert row["losses"][0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1: ln 2
    base, fast = report["results"]
    assert base["precompute_s"] == 0 and fast["precompute_s"] > 0  # the reference pass ran, not read from a cache
    (row,) = report["comparisons"]
    assert row["variant"] == "safepref-same-order" and row["loss"]["steps"] == 3
    # float32 on the CPU, the same batches: the same losses (the tiny curve barely leaves ln 2, so goal_loss
    # may say nothing; the agreement itself is exact)
    assert row["loss"]["agree"] is True and row["loss"]["max_abs_diff"] <= 1e-6
    assert row["speedup"] == round(fast["pairs_per_s"] / base["pairs_per_s"], 3)
    assert "| tiny-llama | full | safepref-same-order |" in out.with_suffix(".md").read_text()
    # --rereport recomputes the comparisons from the measured rows, training nothing
    again = tmp_path / "again.json"
    assert bench.main(["--rereport", str(out), "--out", str(again)]) == 0
    redone = json.loads(again.read_text())
    assert redone["results"] == report["results"] and redone["comparisons"] == report["comparisons"]
    assert "rereported" in redone
