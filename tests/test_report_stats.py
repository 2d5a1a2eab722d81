"""The report on a tiny run whose answers are known: every rate with its interval, the paired comparisons,
the smoothed reward-hacking step, several seeds and prompt sets, and files deleted since the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safepref.records import write_json, write_jsonl
from safepref.report import write_report

PROMPTS = [f"p{i}" for i in range(10)]


def _stage(run: Path, index: dict, name: str) -> Path:
    folder = run / "stages" / (name.replace("/", "__") + "-k")
    folder.mkdir(parents=True)
    write_json(folder / "stage.json", {"stage": name, "seconds": 1.0})
    index[name] = str(folder.relative_to(run))
    return folder


def _jailbreak(folder: Path, harmful: set[str], spec: str = "advbench:10", sub: str = "jailbreak") -> None:
    write_jsonl(folder / sub / "judgments" / "keyword.jsonl",
                [{"judge": "keyword", "prompt_id": p, "sample_index": 0, "harmful": p in harmful} for p in PROMPTS])
    write_json(folder / sub / "metrics.json", {"prompts": spec, "asr": {"keyword": len(harmful) / 10},
                                               "judges": {"keyword": {"file": "judgments/keyword.jsonl"}}})


def _refusal(folder: Path, safe_refused: int, unsafe_refused: int) -> None:
    rows = [{"prompt_id": f"s{i}", "label": "safe", "refusal": {"opening": i < safe_refused}} for i in range(4)]
    rows += [{"prompt_id": f"u{i}", "label": "unsafe", "refusal": {"opening": i < unsafe_refused}} for i in range(4)]
    write_jsonl(folder / "refusal" / "refusals.jsonl", rows)
    write_json(folder / "refusal" / "metrics.json", {"safe": {"n": 4}, "unsafe": {"n": 4}})


def _train(folder: Path, accuracies: list[float]) -> None:
    write_json(folder / "summary.json", {"pairs": {"trained": 40}, "training": {"steps": len(accuracies),
                                                                               "global_batch": 16, "epochs": 1}})
    write_jsonl(folder / "metrics.jsonl", [{"step": i + 1, "rewards/accuracies": a} for i, a in enumerate(accuracies)])


def _tiny_run(tmp_path: Path) -> Path:
    """SFT: harmful on p0-p7 (8/10); HC+Self: p0-p1 (2/10); Self+RM: p0 (1/10). One seed."""
    run = tmp_path / "run"
    index: dict[str, str] = {}
    for condition, harmful in (("sft", PROMPTS[:8]), ("hc-self", PROMPTS[:2]), ("self-rm", PROMPTS[:1])):
        folder = _stage(run, index, f"eval/{condition}")
        _jailbreak(folder, set(harmful))
        _refusal(folder, safe_refused=0 if condition == "sft" else 1, unsafe_refused=0)
        if condition != "sft":
            _train(_stage(run, index, f"train/{condition}"), [1.0, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0])
    write_json(run / "index.json", index)
    write_json(run / "experiment.json", {"experiment": {"name": "tiny", "seed": 0, "seeds": None,
                                                        "conditions": ["sft", "hc-self", "self-rm"]}})
    return run


def _comparison(summary: dict, metric: str, condition: str, baseline: str) -> dict:
    return next(r for r in summary["comparisons"] if (r["metric"], r["condition"], r["baseline"])
                == (metric, condition, baseline))


def test_tiny_run_rates_and_paired_comparisons(tmp_path, monkeypatch):
    import safepref.report

    agreement = {"dataset": "gptfuzz-evaluate", "n": 1540, "accuracy": {"value": 0.9383, "ci": [0.926, 0.95]}}
    monkeypatch.setattr(safepref.report, "judge_validation", lambda judge: agreement if judge == "keyword" else None)
    run = _tiny_run(tmp_path)
    write_report(run)
    summary = json.loads((run / "summary.json").read_text())
    rates = summary["conditions"]["sft"]["rates"]
    # Wilson by hand: 8 of 10 -> [0.4902, 0.9433]; 0 of 4 refused -> [0, 0.96037 / 1.96037 = 0.4899]
    assert rates["asr/jailbreak/keyword"] == {"rate": 0.8, "k": 8, "n": 10, "ci95": [0.4902, 0.9433],
                                              "method": "wilson", "seeds": [0]}
    assert rates["over_refusal/opening"]["ci95"] == [0.0, 0.4899]
    assert rates["compliance/opening"]["ci95"] == [0.5101, 1.0] and rates["compliance/opening"]["n"] == 4
    # HC+Self vs SFT: 6 prompts harmful only under SFT -> McNemar p = 2 * 0.5^6 = 0.03125; the paired
    # bootstrap difference is -X/10 with X ~ Bin(10, 0.6): 95% interval [-0.9, -0.3]
    hc = _comparison(summary, "asr/jailbreak/keyword", "hc-self", "sft")
    assert hc["difference"] == -0.6 and hc["ci95"] == [-0.9, -0.3] and hc["excludes_zero"]
    assert hc["mcnemar"]["0"]["p"] == 0.03125 and (hc["mcnemar"]["0"]["only_a"], hc["mcnemar"]["0"]["only_b"]) \
        == (0, 6)
    # Self+RM vs SFT: 7 discordant -> p = 2 / 128; HC+Self vs Self+RM: 1 discordant -> p = 1.
    # Holm over the family's 3 tests: 0.015625 * 3, 0.03125 * 2, 1 * 1
    rm = _comparison(summary, "asr/jailbreak/keyword", "self-rm", "sft")
    vs_rm = _comparison(summary, "asr/jailbreak/keyword", "hc-self", "self-rm")
    assert rm["mcnemar"]["0"]["p"] == 2 / 128 and vs_rm["mcnemar"]["0"]["p"] == 1.0
    assert (rm["mcnemar"]["0"]["p_holm"], hc["mcnemar"]["0"]["p_holm"], vs_rm["mcnemar"]["0"]["p_holm"]) == \
        (0.046875, 0.0625, 1.0)
    assert hc["holm_family"] == 3 and rm["holm_significant_seeds"] == 1 and hc["holm_significant_seeds"] == 0
    assert vs_rm["difference"] == 0.1 and not vs_rm["excludes_zero"]
    # the smoothed saturation step: 16 pairs a step, >= 64 pairs -> a mean of 4 steps: 0.8125, 0.8125,
    # 0.9375, then 1.0 at step 7; the raw one-batch step is 1
    monitor = summary["conditions"]["hc-self"]["seeds"]["0"]["monitor"]
    assert (monitor["first_step_above_smoothed"], monitor["first_step_above_raw"], monitor["window_pairs"]) == \
        (7, 1, 64)
    assert monitor["pairs"] == 40 and monitor["steps"] == 8 and monitor["pairs_seen"] == 128
    report = (run / "report.md").read_text()
    assert "| SFT | start | — | 0.80 [0.49, 0.94] n=10 |" in report
    assert "| HC+Self | SFT | -0.600 [-0.900, -0.300] | 10 × 1 | 0.031 (0/6) | 0.062 | * |" in report
    assert "| Self+RM | SFT | -0.700 [-1.000, -0.400] | 10 × 1 | 0.016 (0/7) | 0.047 | *† |" in report
    assert "- **keyword**: agreement with held-out human labels (gptfuzz-evaluate): n 1540, accuracy 0.938 " \
           "[0.926, 0.950]" in report
    assert "Holm correction over the 3 comparisons of this table, within each seed." in report
    assert "| HC+Self | 0 | 40 | 8 | 16 | 128 | 7 (4, 64) | 1 |" in report


def test_a_deleted_training_summary_is_reported_missing(tmp_path, capsys):
    from safepref.cli import main

    run = _tiny_run(tmp_path)
    index = json.loads((run / "index.json").read_text())
    (run / index["train/hc-self"] / "summary.json").unlink()
    result = write_report(run)
    assert result["missing"] == [f"train/hc-self: summary.json is missing from {Path(index['train/hc-self']).name}; "
                                 "its training numbers are not reported (rerun the stage after deleting its "
                                 "stage.json)"]
    report = (run / "report.md").read_text()
    assert "## Missing" in report and "train/hc-self: summary.json is missing" in report
    summary = json.loads((run / "summary.json").read_text())
    assert "train" not in summary["conditions"]["hc-self"] and "train" in summary["conditions"]["self-rm"]
    assert main(["report", str(run)]) == 0
    assert "missing: train/hc-self: summary.json is missing" in capsys.readouterr().out
    # a deleted verdict file: the judge's rates for that condition are said to be missing, not silently gone
    (run / index["eval/self-rm"] / "jailbreak" / "judgments" / "keyword.jsonl").unlink()
    result = write_report(run)
    assert result["missing"][1] == ("eval/self-rm: jailbreak/judgments/keyword.jsonl (the keyword verdicts) is "
                                    "missing; that judge's rates and comparisons are not reported")
    summary = json.loads((run / "summary.json").read_text())
    assert "asr/jailbreak/keyword" not in summary["conditions"]["self-rm"]["rates"]


def test_seeds_pool_and_prompt_sets_are_reported_apart(tmp_path):
    """Two seeds of HC+Self (harmful on p0-p1, then p0-p3), SFT once; a second prompt set beside the study's."""
    run = tmp_path / "run"
    index: dict[str, str] = {}
    sft = _stage(run, index, "eval/sft")
    _jailbreak(sft, set(PROMPTS[:8]))
    _jailbreak(sft, set(PROMPTS[:5]), "harmbench", "jailbreak-harmbench")
    for seed, harmful in ((0, PROMPTS[:2]), (1, PROMPTS[:4])):
        folder = _stage(run, index, f"eval/hc-self/seed-{seed}")
        _jailbreak(folder, set(harmful))
        _jailbreak(folder, set(PROMPTS[:5]), "harmbench", "jailbreak-harmbench")
    write_json(run / "index.json", index)
    write_report(run, conditions=["sft", "hc-self"], seeds=[0, 1])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    assert summary["prompt_sets"] == {"jailbreak": "advbench:10", "jailbreak-harmbench": "harmbench"}
    hc = summary["conditions"]["hc-self"]["rates"]
    assert hc["asr/jailbreak/keyword"]["rate"] == 0.3 and hc["asr/jailbreak/keyword"]["n"] == 20
    assert hc["asr/jailbreak/keyword"]["per_seed"]["1"]["ci95"] == [0.1682, 0.6873]  # Wilson 4 of 10
    # 5 of 10 in both seeds: the resampled rate is X/10 with X ~ Bin(10, 0.5), quantiles 2 and 8
    # (P(X<=1)=0.011, P(X<=2)=0.055, P(X<=7)=0.945, P(X<=8)=0.989)
    assert hc["asr/jailbreak-harmbench/keyword"]["rate"] == 0.5
    assert hc["asr/jailbreak-harmbench/keyword"]["ci95"] == [0.2, 0.8]
    assert hc["asr/pooled/keyword"]["n"] == 40 and hc["asr/pooled/keyword"]["rate"] == 0.4
    # SFT (one evaluation) is paired with each seed: 6 and 4 prompts harmful only under SFT
    row = _comparison(summary, "asr/jailbreak/keyword", "hc-self", "sft")
    assert row["mcnemar"]["0"]["p"] == 0.03125 and row["mcnemar"]["1"]["p"] == 0.125
    assert row["difference"] == -0.5 and row["seeds"] == [0, 1]
    # identical answers on harmbench: no difference, McNemar p = 1
    same = _comparison(summary, "asr/jailbreak-harmbench/keyword", "hc-self", "sft")
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["mcnemar"]["1"]["p"] == 1.0
    report = (run / "report.md").read_text()
    assert "## ASR (keyword) per prompt set" in report and "### ASR (keyword) per seed" in report
    assert "asr_sets.png" in summary["figures"]


@pytest.mark.parametrize("spec, folder", [("advbench:100", "jailbreak"), ("harmbench", "jailbreak-harmbench"),
                                          ("donotanswer:300", "jailbreak-donotanswer-300"),
                                          ("/data/my set.csv", "jailbreak-my-set")])
def test_jailbreak_folder_names(spec, folder):
    from safepref.pipeline import jailbreak_folder

    assert jailbreak_folder(spec, primary=spec == "advbench:100") == folder


def test_monitor_smooths_reward_accuracy_over_64_pairs():
    from safepref.train import monitor as mon

    # 4 pairs a step: 64 pairs = a mean of 16 steps. Accuracies 1, 1, 0.5, 0.5, then 1: the 16-step mean first
    # passes 0.95 at step 19 (one 0.5 left in the window: 15.5 / 16); a 5-step mean would pass at step 9
    # (0.5, 1, 1, 1, 1 -> 0.9 at step 8; 1.0 at step 9), the raw batch at step 1.
    acc = [1.0, 1.0, 0.5, 0.5] + [1.0] * 16
    rows = [{"step": i + 1, "rewards/accuracies": a} for i, a in enumerate(acc)]
    summary = mon.summarize_curves(rows, beta=0.1, window=5, pairs_per_step=4)["accuracy"]
    assert (summary["first_step_above"], summary["first_step_above_smoothed"]) == (1, 19)
    assert (summary["smoothing_window"], summary["smoothing_pairs"]) == (16, 64)
    assert mon.summarize_curves(rows, beta=0.1, window=5)["accuracy"]["first_step_above_smoothed"] == 9
    # logged every 2 steps at 16 pairs a step: 32 pairs a row, 2 rows cover 64 pairs
    sparse = mon.first_step_above_pairs([2, 4, 6, 8], [1.0, 0.8, 1.0, 1.0], 16)
    assert sparse == {"first_step_above_smoothed": 8, "first_step_above_raw": 2, "window_rows": 2,
                      "window_pairs": 64}
