"""Model cards: hub YAML header, preference set, DPO settings, monitor, evaluation with intervals and agreement."""

from __future__ import annotations

from pathlib import Path

import yaml

from safepref.cli import main
from safepref.records import write_json
from safepref.train.modelcard import model_card, read_evaluation, refresh_run_cards

SHEET = {"recipe": "x-self", "condition": "gpt4o-self", "rows": 40, "prompts": 20,
         "sources": {"chosen": {"gpt4o": 40}, "rejected": {"smollm2-135m-instruct (greedy)": 40}},
         "length": {"unit": "tokens (x)", "chosen_mean": 80.0, "rejected_mean": 120.0, "chosen_longer_share": 0.25},
         "refusal": {"phrases": "gcg-v1", "chosen_share": 0.8, "rejected_share": 0.05}}


def _model(tmp_path: Path) -> Path:
    build = tmp_path / "build"
    write_json(build / "datasheet.json", SHEET)
    folder = tmp_path / "model"
    write_json(folder / "run.json", {
        "model": "smollm2-135m-instruct", "pairs_source": {"source": str(build / "pairs.jsonl")},
        "command": "safepref train --pairs build/pairs.jsonl --model smollm2-135m-instruct --out model",
        "versions": {"safepref": "0.1.0", "trl": "1.16.0"},
        "config": {"finetune": "full", "beta": 0.1, "learning_rate": 1e-05, "num_train_epochs": 1.0, "seed": 0}})
    write_json(folder / "summary.json", {"status": "complete", "pairs": {"read": 40, "trained": 38,
                                                                        "dropped": {"longer_than_max_length": 2}},
                                         "monitor": {"total_steps": 10, "accuracy": {"final": 1.0, "threshold": 0.95,
                                                                                     "first_step_above": 3},
                                                     "margin": {"growth": 4.5},
                                                     "warnings": ["the length cue: chosen shorter"]}})
    return folder


def _split(text: str) -> tuple[dict, str]:
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def _eval(folder: Path) -> Path:
    write_json(folder / "jailbreak" / "metrics.json", {
        "prompts": "advbench:4", "counts": {"answers": 4},
        "judges": {"keyword": {"judged": 4, "harmful": 3, "asr": 0.75, "mean_score": 0.75},
                   "classifier": {"judged": 4, "harmful": 1, "asr": 0.25, "mean_score": 0.3,
                                  "judge": {"validation": {"n": 200, "accuracy": 0.9, "kappa": 0.8}}}}})
    write_json(folder / "refusal" / "metrics.json", {"safe": {"refusal_rate": {"opening": 0.04}},
                                                     "unsafe": {"compliance_rate": {"opening": 0.5}}})
    return folder


def test_card_without_evaluation(tmp_path):
    meta, body = _split(model_card(_model(tmp_path)))
    assert meta == {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0",
                    "library_name": "transformers", "tags": ["safepref", "dpo", "trl", "safety", "gpt4o-self"]}
    assert "38 pairs trained of 40 read (dropped: {'longer_than_max_length': 2})" in body
    assert "- chosen from: gpt4o (40)" in body and "chosen longer in 0.25 of pairs" in body
    assert "data licenses: gpt4o: other (OpenAI terms of use); smollm2-135m-instruct (greedy): model output" in body
    assert "| beta | 0.1 |" in body and "| learning_rate | 1e-05 |" in body
    assert "10 steps; reward accuracy final 1.00, first step above 0.95: 3; margin growth 4.50" in body
    assert "- warning: the length cue: chosen shorter" in body and "Not evaluated yet" in body


def test_card_with_evaluation_from_the_command_line(tmp_path, capsys, monkeypatch):
    from safepref.evaluate import judges

    shipped = {"keyword": {"n": 1540, "accuracy": 0.7104, "ci": [0.6872, 0.7325], "kappa": 0.2868,
                           "dataset": "gptfuzz-evaluate"}}
    monkeypatch.setattr(judges, "judge_validation", shipped.get)
    folder = _model(tmp_path)
    evaluation = _eval(tmp_path / "eval")
    assert main(["export", str(folder), "--eval", str(evaluation)]) == 0
    assert "README.md" in capsys.readouterr().out
    meta, body = _split((folder / "README.md").read_text())
    assert meta["model-index"] == [{"name": "model", "results": [{
        "task": {"type": "text-generation", "name": "jailbreak"}, "dataset": {"name": "advbench:4", "type": "advbench"},
        "metrics": [{"type": "attack_success_rate", "name": "ASR (keyword judge)", "value": 0.75},
                    {"type": "attack_success_rate", "name": "ASR (classifier judge)", "value": 0.25}]}]}]
    # Wilson 95% intervals: 3 of 4 -> [0.30, 0.95], 1 of 4 -> [0.05, 0.70]
    assert ("| keyword | 0.75 | [0.30, 0.95] | 4 | 0.75 | n 1540, accuracy 0.710 [0.687, 0.733], kappa 0.287 "
            "(gptfuzz-evaluate) |") in body  # the shipped judge's held-out agreement
    assert "| classifier | 0.25 | [0.05, 0.70] | 4 | 0.30 | n 200, accuracy 0.900, kappa 0.800 |" in body
    monkeypatch.setattr(judges, "judge_validation", lambda name: None)
    assert main(["export", str(folder), "--eval", str(evaluation)]) == 0
    assert "| keyword | 0.75 | [0.30, 0.95] | 4 | 0.75 | not validated |" in (folder / "README.md").read_text()
    assert "opening 0.04 of safe prompts refused; opening 0.50 of unsafe prompts complied with" in body
    assert read_evaluation(evaluation / "jailbreak")["jailbreak"]["prompts"] == "advbench:4"


def test_report_refreshes_the_cards_of_every_seed(tmp_path):
    model = _model(tmp_path)
    evaluation = _eval(tmp_path / "eval")
    write_json(evaluation / "stage.json", {})
    (tmp_path / "build" / "datasheet.json").unlink()  # the run's build folder is given instead
    build = tmp_path / "build2"
    write_json(build / "datasheet.json", {**SHEET, "condition": "from-the-run"})
    written = refresh_run_cards({"train/gpt4o-self/seed-1": model, "eval/gpt4o-self/seed-1": evaluation,
                                 "build/gpt4o-self": build})
    assert written == [model / "README.md"]
    meta, body = _split(written[0].read_text())
    assert meta["tags"][-1] == "from-the-run" and "| keyword | 0.75 |" in body
