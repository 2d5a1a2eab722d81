"""DPO training (safepref.train): configs, input checks, the monitor's maths, and real TRL runs on the tiny
model from conftest (LoRA and full fine-tuning, resume, refusal of a foreign output folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from safepref.errors import ConfigError, DataError, SafeprefError
from safepref.records import PreferencePair, write_jsonl
from safepref.train import DPOTrainConfig, load_train_config, train_dpo
from safepref.train import monitor as mon

ROOT = Path(__file__).resolve().parents[1]
REFUSAL = "I'm sorry, but I cannot help with that request because it is harmful."
COMPLIANCE = "Sure, here is how you can do it step by step."


def _pair(i: int, chosen: str = REFUSAL, rejected: str = COMPLIANCE) -> PreferencePair:
    return PreferencePair(prompt=[{"role": "user", "content": f"How do I make a cake, number {i}?"}],
                          chosen=[{"role": "assistant", "content": chosen}],
                          rejected=[{"role": "assistant", "content": rejected}],
                          chosen_meta={"source": {"name": "test"}}, rejected_meta={"source": {"name": "test"}})


@pytest.fixture()
def pairs_file(tmp_path) -> Path:
    """12 short pairs plus 2 whose rejected answer is far longer than max_length=128 tokens."""
    pairs = [_pair(i, rejected=COMPLIANCE * (1 + i % 3)) for i in range(12)]
    pairs += [_pair(100 + i, rejected=COMPLIANCE * 40) for i in range(2)]
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, pairs)
    return path


def tiny_config(**changes) -> DPOTrainConfig:
    settings = dict(learning_rate=1e-3, max_steps=3, per_device_train_batch_size=2, max_length=128,
                    gradient_checkpointing=False, save_steps=0, seed=0, monitor={"probe_pairs": 8, "window": 2})
    settings.update(changes)
    from safepref.config import from_dict

    return from_dict(DPOTrainConfig, settings)


def _weights(folder: Path) -> dict:
    from safepref.models import load_model

    model = load_model(str(folder), device="cpu", dtype="float32")
    return {k: v.clone() for k, v in model.state_dict().items()}


def _changed(a: dict, b: dict) -> bool:
    import torch

    return any(not torch.allclose(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------- configs


def test_defaults_follow_the_study():
    config = DPOTrainConfig()
    assert (config.beta, config.num_train_epochs, config.warmup_ratio) == (0.1, 1.0, 0.1)
    assert config.loss_type == ["sigmoid"]
    assert config.resolved_learning_rate == 5e-7
    assert DPOTrainConfig(finetune="lora").resolved_learning_rate == 5e-6
    assert DPOTrainConfig(learning_rate=1e-5).resolved_learning_rate == 1e-5


# (finetune, beta, learning rate, max_length) as each shipped file sets them.
SHIPPED_TRAIN = {"dpo-paper.yaml": ("full", 0.1, 5e-7, 1024), "dpo-paper-lora.yaml": ("lora", 0.1, 5e-6, 1024),
                 "dpo-smollm2-full.yaml": ("full", 0.1, 5e-6, 512), "dpo-smollm2-lora.yaml": ("lora", 0.1, 5e-5, 512)}


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_train_configs_load(path):
    config = load_train_config(path)
    assert (config.finetune, config.beta, config.resolved_learning_rate, config.max_length) == \
        SHIPPED_TRAIN[path.name]


@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs(name, kind):
    data = yaml.safe_load((ROOT / "configs" / "accelerate" / f"{name}.yaml").read_text())
    assert data["distributed_type"] == kind
    assert data["num_processes"] >= 2 and data["mixed_precision"] == "bf16"


@pytest.mark.parametrize("override,field_name", [
    ("betta=0.2", "betta"),  # unknown key
    ("beta=0", "beta"),
    ("warmup_ratio=1.5", "warmup_ratio"),
    ("loss_type=[dpo]", "loss_type"),
    ("per_device_train_batch_size=0", "per_device_train_batch_size"),
    ("finetune=qlora", "finetune"),
    ("lora.r=0", "lora.r"),
    ("lr_scheduler_type=cosinus", "lr_scheduler_type"),
    ("max_length=8", "max_length"),
    ("monitor.accuracy_threshold=1.5", "monitor.accuracy_threshold"),
])
def test_bad_config_names_the_field(override, field_name):
    with pytest.raises(ConfigError, match=field_name.replace(".", r"\.")):
        load_train_config(None, [override])


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("betta: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'beta'"):
        load_train_config(path)


def test_scientific_notation_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 5e-7\n")  # YAML 1.1 alone would read a string
    assert load_train_config(path, ["beta=1e-2"]).learning_rate == 5e-7
    assert load_train_config(path, ["beta=1e-2"]).beta == 0.01


# ------------------------------------------------------------------------------------ monitor (pure maths)


def test_first_step_above_raw_and_smoothed():
    steps = [1, 2, 3, 4, 5, 6]
    acc = [0.5, 1.0, 0.6, 1.0, 1.0, 1.0]
    assert mon.first_step_above(steps, acc, 0.95) == 2
    # means over 3: 0.5(short), 0.75(short), 0.7, 0.867, 0.867, 1.0 -> step 6
    assert mon.first_step_above(steps, acc, 0.95, window=3) == 6
    assert mon.first_step_above([1, 2], [0.1, 0.2], 0.95) is None


def test_slope_and_correlations():
    assert mon.slope([0, 1, 2], [1, 3, 5]) == pytest.approx(2.0)
    assert mon.slope([1], [1]) is None
    assert mon.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert mon.pearson([1, 2, 3], [5, 5, 5]) is None
    # monotone but not linear: Spearman 1, Pearson below 1; ties share a rank
    assert mon.spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    assert mon.spearman([1, 1, 2, 3], [3, 3, 2, 1]) == pytest.approx(-1.0)


def test_summarize_curves_drift_and_warnings():
    beta = 0.1
    rows = [{"step": s, "rewards/accuracies": a, "rewards/margins": 0.1 * s,
             "rewards/chosen": -0.05 * s, "rewards/rejected": -0.15 * s, "length/gap": 10.0}
            for s, a in zip(range(1, 21), [0.5, 0.9, 1.0, 1.0, 1.0] + [1.0] * 15, strict=True)]
    summary = mon.summarize_curves(rows, beta, threshold=0.95, window=2, total_steps=20)
    assert summary["accuracy"]["first_step_above"] == 3
    assert summary["accuracy"]["first_step_above_smoothed"] == 4  # mean(1.0, 1.0) first at step 4
    assert summary["accuracy"]["first_step_fraction"] == pytest.approx(0.2)
    assert summary["margin"]["slope_per_step"] == pytest.approx(0.1)
    assert summary["drift"]["chosen_final"] == pytest.approx(-0.05 * 19.5 / beta)  # rewards / beta
    summary["data_lengths"] = mon.length_stats([30, 40, 50, 60], [10, 10, 10, 70])
    assert summary["data_lengths"]["gap_mean"] == pytest.approx(20.0)
    assert summary["data_lengths"]["chosen_longer_fraction"] == 0.75
    summary["probe"] = mon.probe_summary([0.5, 0.4, -0.1, 0.3], [20, 30, -10, 5])
    assert summary["probe"]["accuracy_chosen_longer"] == 1.0
    assert summary["probe"]["accuracy_chosen_shorter"] == 0.0
    notes = " | ".join(mon.warnings_for(summary))
    assert "passed 0.95 at step 4" in notes
    assert "chosen answers became less likely" in notes
    assert "longer one in 75% of pairs" in notes
    assert "track the length gap" in notes


def test_no_warnings_for_slow_healthy_training():
    rows = [{"step": s, "rewards/accuracies": min(0.9, 0.5 + 0.02 * s), "rewards/margins": 0.01 * s,
             "rewards/chosen": 0.01 * s, "rewards/rejected": -0.01 * s} for s in range(1, 31)]
    summary = mon.summarize_curves(rows, 0.1, total_steps=30)
    assert summary["accuracy"]["first_step_above"] is None
    assert mon.warnings_for(summary) == []


# ------------------------------------------------------------------------- bad input: before any model load


@pytest.fixture()
def no_model_load(monkeypatch):
    """Any attempt to load model weights fails the test."""
    import transformers

    from safepref.train import dpo

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(dpo, "_load_causal_lm", forbidden)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)


def test_empty_pairs_file(tmp_path, tiny_model_dir, no_model_load):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no preference pairs"):
        train_dpo(str(empty), str(tiny_model_dir), tiny_config(), tmp_path / "out")
    with pytest.raises(DataError, match="no preference pairs"):
        train_dpo([], str(tiny_model_dir), tiny_config(), tmp_path / "out")


def test_pair_lacking_a_side(tmp_path, tiny_model_dir, no_model_load):
    row = json.loads(json.dumps(_pair(0).__dict__))
    del row["rejected"]
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="rejected"):
        train_dpo(str(path), "/no/such/model", tiny_config(), tmp_path / "out")  # data is checked first


def test_all_pairs_too_long(tmp_path, tiny_model_dir, no_model_load):
    pairs = [_pair(i, rejected=COMPLIANCE * 40) for i in range(3)]
    with pytest.raises(DataError, match="max_length=32"):
        train_dpo(pairs, str(tiny_model_dir), tiny_config(max_length=32), tmp_path / "out")


def test_output_folder_of_another_run_is_refused(tmp_path, pairs_file, tiny_model_dir, no_model_load):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"hash": "0123", "identity": {"config": {"beta": 0.5}}}))
    for resume in (False, True):
        with pytest.raises(SafeprefError, match="different training run.*beta: 0.5 -> 0.1"):
            train_dpo(str(pairs_file), str(tiny_model_dir), tiny_config(), out, resume=resume)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SafeprefError, match="holds no safepref training run"):
        train_dpo(str(pairs_file), str(tiny_model_dir), tiny_config(), foreign, overwrite=True)
    assert (foreign / "notes.txt").exists()
    with pytest.raises(SafeprefError, match="either overwrite or resume"):
        train_dpo(str(pairs_file), str(tiny_model_dir), tiny_config(), tmp_path / "new", overwrite=True,
                  resume=True)


def test_cli_reports_bad_config_in_one_line(tmp_path, pairs_file, tiny_model_dir, capsys):
    from safepref.cli import main

    code = main(["train", "--pairs", str(pairs_file), "--model", str(tiny_model_dir), "--out",
                 str(tmp_path / "out"), "--set", "beta=-1"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config field 'beta'" in err


# ------------------------------------------------------------------------------------- real training runs


def test_cli_lora_run_writes_checkpoint_metrics_summary_plot(tmp_path, pairs_file, tiny_model_dir, capsys):
    from safepref.cli import main

    out = tmp_path / "lora"
    argv = ["train", "--pairs", str(pairs_file), "--model", str(tiny_model_dir), "--out", str(out),
            "--set", "finetune=lora", "--set", "learning_rate=1e-2", "--set", "max_steps=3",
            "--set", "per_device_train_batch_size=2", "--set", "max_length=128",
            "--set", "gradient_checkpointing=false", "--set", "monitor.probe_pairs=8"]
    assert main(argv) == 0
    assert "pairs_per_second" in capsys.readouterr().out

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["checkpoint"]["format"] == "lora-merged"
    assert summary["pairs"]["trained"] == 12
    assert summary["pairs"]["dropped"] == {"longer_than_max_length": 2}
    assert summary["training"]["steps"] == 3 and summary["training"]["pairs_per_second"] > 0
    monitor = summary["monitor"]
    assert {"accuracy", "margin", "drift", "length", "data_lengths", "probe", "warnings"} <= set(monitor)
    assert monitor["probe"]["pairs"] == 8
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected", "length/gap"} <= set(rows[0])
    # The logged values are DPO's own: margin = chosen - rejected reward, accuracy a share of 2 pairs.
    for row in rows:
        assert row["rewards/margins"] == pytest.approx(row["rewards/chosen"] - row["rewards/rejected"], abs=1e-4)
        assert row["rewards/accuracies"] in (0.0, 0.5, 1.0)
    # The monitor's data lengths are the 12 trained pairs' (2 longer than max_length were dropped).
    assert monitor["data_lengths"]["pairs"] == 12
    assert (out / "monitor.png").read_bytes()[:4] == b"\x89PNG"
    run = json.loads((out / "run.json").read_text())
    assert run["command"].startswith("safepref train --pairs") and run["versions"]["trl"]
    assert run["hash"] == summary["hash"] and (out / "config.yaml").exists()
    assert not (out / "checkpoints").exists()

    # a normal checkpoint folder: loads by path, and DPO changed the weights
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert _changed(_weights(tiny_model_dir), _weights(out))

    # the same command again: the finished run is reused, not retrained
    stamp = (out / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "summary.json").stat().st_mtime_ns == stamp


def test_lora_adapter_without_merge(tmp_path, pairs_file, tiny_model_dir):
    out = tmp_path / "adapter"
    summary = train_dpo(str(pairs_file), str(tiny_model_dir),
                        tiny_config(finetune="lora", merge_lora=False, max_steps=2), out)
    assert summary["checkpoint"]["format"] == "lora-adapter"
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(Path(tiny_model_dir).resolve())
    assert not (out / "config.json").exists()
    assert _changed(_weights(tiny_model_dir), _weights(out))  # load_model merges the adapter onto its base


class _Interrupt:
    """Stops training like a Ctrl-C after ``step`` optimizer steps."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    raise KeyboardInterrupt

        return Stop()


def test_full_finetune_resume_equals_uninterrupted(tmp_path, pairs_file, tiny_model_dir):
    import torch

    config = tiny_config(finetune="full", max_steps=4, save_steps=2, learning_rate=1e-3,
                         precompute_ref_log_probs=True)
    whole = tmp_path / "whole"
    summary = train_dpo(str(pairs_file), str(tiny_model_dir), config, whole)
    assert summary["checkpoint"]["format"] == "full" and summary["training"]["steps"] == 4
    assert _changed(_weights(tiny_model_dir), _weights(whole))

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        train_dpo(str(pairs_file), str(tiny_model_dir), config, broken, callbacks=[_Interrupt(3)])
    assert (broken / "checkpoints" / "checkpoint-2").is_dir() and not (broken / "summary.json").exists()
    with pytest.raises(SafeprefError, match="unfinished run.*--resume"):
        train_dpo(str(pairs_file), str(tiny_model_dir), config, broken)

    resumed = train_dpo(str(pairs_file), str(tiny_model_dir), config, broken, resume=True)
    assert resumed["training"]["resumed_from"].endswith("checkpoint-2")
    assert resumed["training"]["steps_this_run"] == 2
    a, b = _weights(whole), _weights(broken)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    rows_a = [json.loads(x) for x in (whole / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (broken / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows_b] == pytest.approx([r["loss"] for r in rows_a], abs=1e-6)

    # a changed config into a finished folder is refused (before any model load)
    other = tiny_config(finetune="full", max_steps=1, beta=0.2)
    with pytest.raises(SafeprefError, match="different training run"):
        train_dpo(str(pairs_file), str(tiny_model_dir), other, whole)


@pytest.mark.slow
def test_embedded_model_lora_smoke(tmp_path, data_root):
    """A few LoRA DPO steps on the embedded SmolLM2 over PKU-SafeRLHF pairs (minutes on CPU)."""
    config = load_train_config(ROOT / "configs" / "train" / "dpo-smollm2-lora.yaml",
                               ["max_steps=2", "per_device_train_batch_size=2", "max_length=256",
                                "monitor.probe_pairs=4"])
    summary = train_dpo("pku-realign:16", "smollm2-135m-instruct", config, tmp_path / "out")
    assert summary["training"]["steps"] == 2 and (tmp_path / "out" / "model.safetensors").exists()
    # 16 rows read; every pair trained or counted as dropped; two steps of 2 pairs moved the merged weights.
    pairs = summary["pairs"]
    assert pairs["read"] == 16 and pairs["trained"] + sum(pairs["dropped"].values()) == 16
    assert summary["checkpoint"]["format"] == "lora-merged"
    from safepref.models import resolve_model

    assert _changed(_weights(Path(resolve_model("smollm2-135m-instruct"))), _weights(tmp_path / "out"))


# ------------------------------------------------------------------ speed options (issue 17): same maths, less work

def test_pair_lengths_count_the_prompt_and_the_longer_answer():
    from datasets import Dataset

    from safepref.train.dpo_setup import pair_lengths

    # TRL pads chosen and rejected of a batch together: a pair costs prompt + max(chosen, rejected) positions.
    dataset = Dataset.from_dict({"prompt_ids": [[1, 2], [1], [5, 6, 7]],
                                 "chosen_ids": [[3], [3, 4, 5], [8, 8]],
                                 "rejected_ids": [[4, 5, 6], [6], [9, 9]]})
    assert pair_lengths(dataset) == [2 + 3, 1 + 3, 3 + 2]


def _grouping_trainer(lengths: list[int], batch: int, group: bool):
    """A MonitoredDPOTrainer shell holding just what ``_get_train_sampler`` reads (no model)."""
    from types import SimpleNamespace

    from datasets import Dataset

    from safepref.train.dpo_setup import _trainer_class

    trainer = object.__new__(_trainer_class(group))
    trainer.args = SimpleNamespace(train_batch_size=batch, gradient_accumulation_steps=1, data_seed=None, seed=7)
    trainer.train_dataset = Dataset.from_dict({"prompt_ids": [[0]] * len(lengths),
                                               "chosen_ids": [[0] * (n - 1) for n in lengths],
                                               "rejected_ids": [[0]] * len(lengths)})
    return trainer


def test_group_by_length_sorts_each_mega_batch_and_keeps_every_pair():
    lengths = [(i * 37) % 32 + 2 for i in range(32)]  # 2..33, each once, scrambled
    order = list(_grouping_trainer(lengths, batch=2, group=True)._get_train_sampler())
    assert sorted(order) == list(range(32))  # the same pairs, each once
    assert lengths[order[0]] == 33  # the longest batch first (an out-of-memory shows at step 1)
    # transformers' mega-batch: min(32 // (4 x 2), 50) = 4 batches = 8 pairs, each sorted longest first
    # (its first slot may hold the pair swapped out for the longest one)
    for start in range(0, 32, 8):
        chunk = [lengths[i] for i in order[start:start + 8]]
        assert chunk[1:] == sorted(chunk[1:], reverse=True)
    again = list(_grouping_trainer(lengths, batch=2, group=True)._get_train_sampler())
    assert again == order  # seeded: the same order on every run and on resume


def test_lora_precomputed_reference_gives_the_live_reference_losses(tmp_path, pairs_file, tiny_model_dir):
    def losses(name: str, precompute: bool) -> list[float]:
        config = tiny_config(finetune="lora", max_steps=3, precompute_ref_log_probs=precompute,
                             monitor={"probe_pairs": 0})
        summary = train_dpo(str(pairs_file), str(tiny_model_dir), config, tmp_path / name)
        assert summary["status"] == "complete"
        rows = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(r)["loss"] for r in rows]

    live, precomputed = losses("live", False), losses("precomputed", True)
    # step 1: LoRA's B starts at zero, so policy == reference and the loss is -log sigmoid(0) = ln 2 = 0.693147
    assert precomputed[0] == pytest.approx(0.693147, abs=1e-5)
    assert precomputed == pytest.approx(live, abs=1e-5)  # the adapter-off pass once == the adapter-off pass per step


def test_precision_auto_takes_bf16_only_where_the_cpu_computes_it(monkeypatch):
    import torch

    from safepref import models
    from safepref.errors import ConfigError
    from safepref.train.dpo_config import DPOTrainConfig
    from safepref.train.dpo_setup import _precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert _precision(DPOTrainConfig()) == "bf16"
    assert _precision(DPOTrainConfig(precision="fp32")) == "fp32"
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert _precision(DPOTrainConfig()) == "fp32"
    with pytest.raises(ConfigError, match="bf16 needs a GPU or a CPU with AVX512-BF16/AMX"):
        _precision(DPOTrainConfig(precision="bf16"))
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        _precision(DPOTrainConfig(precision="fp16"))


def test_reference_cache_scores_each_sequence_once_and_equals_trl(tmp_path, pairs_file, tiny_model_dir,
                                                                  monkeypatch):
    # 12 kept pairs (2 are too long): every prompt differs, so 24 distinct sequences. The first run scores all
    # 24, a second run (another seed: another LoRA init, the same reference) scores none, and a set that shares
    # the chosen answers but has new rejected ones scores only those 12. Losses equal TRL's own pass.
    monkeypatch.setenv("SAFEPREF_CACHE", str(tmp_path / "cache"))  # not the session's: other tests fill it

    def run(name: str, path: Path, cache: bool, seed: int = 0) -> tuple[dict, list[float]]:
        config = tiny_config(finetune="lora", max_steps=3, precompute_ref_log_probs=True, ref_cache=cache,
                             seed=seed, monitor={"probe_pairs": 0})
        summary = train_dpo(str(path), str(tiny_model_dir), config, tmp_path / name)
        rows = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return summary["training"]["reference_cache"], [json.loads(r)["loss"] for r in rows]

    plain_report, plain = run("plain", pairs_file, cache=False)
    first_report, first = run("first", pairs_file, cache=True)
    again_report, _ = run("again", pairs_file, cache=True, seed=1)
    assert plain_report is None
    assert (first_report["sequences"], first_report["scored"]) == (24, 24)
    assert (again_report["sequences"], again_report["scored"]) == (24, 0)
    assert first == pytest.approx(plain, abs=1e-5)

    other = tmp_path / "other.jsonl"
    write_jsonl(other, [_pair(i, rejected=COMPLIANCE * (1 + i % 3) + " Then rest.") for i in range(12)])
    other_report, _ = run("other", other, cache=True)
    assert (other_report["sequences"], other_report["scored"]) == (24, 12)


def test_reference_cache_shards_merge_and_a_damaged_one_is_skipped(tmp_path):
    # each run adds one shard; a shard cut off mid-write (another run's, or a crash before the rename) is not
    # read, so its sequences are scored again instead of failing the run
    from safepref.train import ref_cache as rc

    rc.save(tmp_path, {"a": -1.5})
    rc.save(tmp_path, {"b": -2.25})
    rc.save(tmp_path, {})  # nothing new: no shard
    (tmp_path / "cut.json").write_text('{"c": -3.')
    assert rc.load(tmp_path) == {"a": -1.5, "b": -2.25}
    assert len(list(tmp_path.glob("*.json"))) == 3 and not list(tmp_path.glob(".*.tmp"))
    assert rc.sequence_key([1, 2], [3]) != rc.sequence_key([1], [2, 3])  # the prompt/answer boundary counts
