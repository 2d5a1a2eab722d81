"""General capability through lm-eval, run for real on local task YAMLs with the tiny model (offline)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from safepref.cli import main  # noqa: E402
from safepref.errors import ConfigError, DataError, ModelError  # noqa: E402
from safepref.evaluate import general  # noqa: E402
from safepref.evaluate.general import (  # noqa: E402
    LOCAL_TASKS_DIR,
    evaluate_general,
    parse_tasks,
)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _user_task(folder: Path, n: int = 10, data_file: str = "items.jsonl") -> Path:
    """A task folder as a user writes it: YAML with data_files relative to itself, JSONL beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"q": f"Is {i} even?", "choices": ["yes", "no"], "label": i % 2} for i in range(n)]
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "parity.yaml").write_text(
        "task: my_parity\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data_file}\noutput_type: multiple_choice\ntest_split: test\n"
        "doc_to_text: \"{{q}}\"\ndoc_to_choice: choices\ndoc_to_target: label\nmetadata:\n  version: 2.0\n")
    return folder


def test_parse_tasks_expands_presets_and_drops_duplicates():
    assert parse_tasks("paper") == list(general.PAPER_TASKS)
    assert parse_tasks("arc_easy, local,arc_easy") == ["arc_easy", "safepref_basic_mc"]
    assert parse_tasks(["safepref_basic_mc"]) == ["safepref_basic_mc"]
    with pytest.raises(ConfigError, match="empty"):
        parse_tasks(" , ")


def _accuracy_from_samples(rows: list[dict]) -> tuple[float, float]:
    """(accuracy, its standard error) worked out from logged samples: the choice with the highest
    log-likelihood against the target; stderr = sqrt(p (1 - p) / (n - 1)), lm-eval's sample-std formula."""
    hits = [max(range(len(r["filtered_resps"])), key=lambda i: r["filtered_resps"][i][0]) == int(r["target"])
            for r in rows]
    p, n = sum(hits) / len(hits), len(hits)
    return p, (p * (1 - p) / (n - 1)) ** 0.5


def test_local_task_runs_through_lm_eval(tiny_model_dir, tmp_path):
    out = tmp_path / "general"
    flat = evaluate_general(str(tiny_model_dir), "safepref_basic_mc", device="cpu", batch_size=8, out_dir=out,
                            log_samples=True)

    metrics = flat["safepref_basic_mc"]
    rows = _lines(out / "samples" / "safepref_basic_mc.jsonl")
    acc, stderr = _accuracy_from_samples(rows)
    assert metrics["acc"] == pytest.approx(acc) and metrics["acc_stderr"] == pytest.approx(stderr)
    assert metrics["acc_norm"] == pytest.approx(sum(r["acc_norm"] for r in rows) / len(rows))
    summary = json.loads((out / "results.json").read_text())
    assert summary["results"] == flat
    size = len(_lines(LOCAL_TASKS_DIR / "safepref_basic_mc.jsonl"))
    assert summary["n_samples"]["safepref_basic_mc"] == {"original": size, "effective": size}
    assert summary["versions"]["safepref_basic_mc"] == 1.0
    assert summary["lm_eval_version"] == importlib.metadata.version("lm_eval")
    assert summary["config"]["model_args"]["pretrained"] == str(tiny_model_dir)
    assert summary["config"]["tasks"] == ["safepref_basic_mc"]
    assert summary["task_sources"]["safepref_basic_mc"].endswith("safepref_basic_mc.yaml")
    assert "safepref_basic_mc" in summary["task_configs"]
    assert not list(out.glob(".*.tmp"))  # atomic write left no temp file


def test_cli_user_task_with_relative_data_files_and_limit(tiny_model_dir, tmp_path, monkeypatch, capsys):
    tasks = _user_task(tmp_path / "my_tasks", n=10)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # data_files must resolve against the YAML, not the working directory
    assert main(["eval", "general", "--model", str(tiny_model_dir), "--tasks", "my_parity", "--include-path",
                 str(tasks), "--limit", "3", "--device", "cpu", "--batch-size", "4",
                 "--out", str(tmp_path / "out"), "--log-samples"]) == 0

    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["n_samples"]["my_parity"] == {"original": 10, "effective": 3}
    assert summary["versions"]["my_parity"] == 2.0
    rows = _lines(tmp_path / "out" / "samples" / "my_parity.jsonl")
    assert [r["doc"]["q"] for r in rows] == ["Is 0 even?", "Is 1 even?", "Is 2 even?"]  # the first 3 items
    assert summary["results"]["my_parity"]["acc"] == pytest.approx(_accuracy_from_samples(rows)[0])
    assert "my_parity" in capsys.readouterr().out


def test_lora_adapter_is_applied_through_peft(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # init_lora_weights=False: random B, so the adapter changes the outputs (the default starts at zero).
    adapter = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "lora")

    runs = {}
    for name, spec in (("base", tiny_model_dir), ("lora", tmp_path / "lora")):
        evaluate_general(str(spec), "safepref_basic_mc", limit=3, device="cpu", out_dir=tmp_path / name,
                         log_samples=True)
        runs[name] = _lines(tmp_path / name / "samples" / "safepref_basic_mc.jsonl")
    model_args = json.loads((tmp_path / "lora" / "results.json").read_text())["config"]["model_args"]
    assert model_args["peft"] == str(tmp_path / "lora")
    assert model_args["pretrained"] == str(tiny_model_dir)
    assert len(runs["base"]) == len(runs["lora"]) == 3
    base_ll = [choice[0] for row in runs["base"] for choice in row["filtered_resps"]]
    lora_ll = [choice[0] for row in runs["lora"] for choice in row["filtered_resps"]]
    assert base_ll != pytest.approx(lora_ll, abs=1e-4)


def test_missing_model_folder_fails_before_lm_eval(tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("lm-eval started for a missing model")

    monkeypatch.setattr(general, "_load_tasks", must_not_run)
    with pytest.raises(ModelError, match="does not exist"):
        evaluate_general(str(tmp_path / "no-such-model"), "safepref_basic_mc", out_dir=tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no \\*.safetensors weights"):
        evaluate_general(str(empty), "safepref_basic_mc")
    assert not (tmp_path / "out").exists()


def test_bad_task_inputs_get_clear_errors(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        evaluate_general(str(tiny_model_dir), "safepref_basic_mc", include_path=str(tmp_path / "nope"))
    tasks = _user_task(tmp_path / "broken", data_file="missing.jsonl")
    with pytest.raises(DataError, match="missing.jsonl"):
        evaluate_general(str(tiny_model_dir), "my_parity", include_path=str(tasks), device="cpu")
    with pytest.raises(ConfigError, match="positive"):
        evaluate_general(str(tiny_model_dir), "safepref_basic_mc", limit=0)


def test_saferlhf_preference_task_reads_safepref_data(data_root, tiny_model_dir, tmp_path):
    flat = evaluate_general(str(tiny_model_dir), "safepref_saferlhf_pref", limit=6, device="cpu",
                            out_dir=tmp_path, log_samples=True)
    samples = _lines(tmp_path / "samples" / "safepref_saferlhf_pref.jsonl")
    assert flat["safepref_saferlhf_pref"]["acc"] == pytest.approx(_accuracy_from_samples(samples)[0])
    rows = _lines(data_root / "saferlhf" / "paper_test.jsonl")
    usable = sum(1 for r in rows if r["chosen"][-1]["content"].strip()
                 and r["chosen"][-1]["content"].strip() != r["rejected"][-1]["content"].strip())
    counts = json.loads((tmp_path / "results.json").read_text())["n_samples"]["safepref_saferlhf_pref"]
    assert counts == {"original": usable, "effective": 6}


def test_saferlhf_preference_task_without_data_root(tiny_model_dir, monkeypatch):
    monkeypatch.delenv("SAFEPREF_DATA", raising=False)
    with pytest.raises(DataError, match="SAFEPREF_DATA"):
        evaluate_general(str(tiny_model_dir), "safepref_saferlhf_pref", device="cpu")


@pytest.mark.slow
def test_unknown_task_suggests_names(tiny_model_dir):
    # Indexes all of lm-eval's task YAMLs (~35 s): slow.
    with pytest.raises(ConfigError, match="did you mean.*hellaswag"):
        evaluate_general(str(tiny_model_dir), "hellaswagg", device="cpu")


@pytest.mark.slow
def test_embedded_model_beats_chance_on_local_task(tmp_path):
    flat = evaluate_general("smollm2-135m-instruct", "safepref_basic_mc", device="cpu", out_dir=tmp_path)
    # 4 choices: chance is 0.25; SmolLM2-135M-Instruct gets most of these easy items right.
    assert flat["safepref_basic_mc"]["acc"] > 0.4
