"""Random twins (``random:<arch>``) and the rehearsal of a paper config (``safepref run ... --rehearse N``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from safepref import random_models
from safepref.errors import ConfigError, ModelError
from safepref.pipeline import load_experiment
from safepref.rehearse import rehearsal_plan, rehearsal_stages
from safepref.rehearse_estimate import _scaled

ROOT = Path(__file__).resolve().parents[1]


def test_every_kept_architecture_builds_on_the_meta_device():
    # Parameter counts of the real checkpoints (their model cards), within 1%.
    published = {"llama-2-7b": 6.74e9, "llama-2-13b": 13.02e9, "llama-3.1-8b": 8.03e9, "llama-3.1-70b": 70.55e9,
                 "mistral-7b": 7.24e9, "qwen2-7b": 7.62e9, "deberta-v3-large": 0.435e9}
    from transformers import AutoConfig

    for name, data in random_models.architectures().items():
        config = dict(data["config"])
        config = AutoConfig.for_model(config.pop("model_type"), **config)
        import torch

        with torch.device("meta"):
            cls = random_models._model_class_for_task(data["task"])
            count = sum(p.numel() for p in cls.from_config(config).parameters())
        if name in published:
            assert abs(count / published[name] - 1) < 0.01, (name, count)


def test_random_spec_resolves_to_a_marked_folder_and_generates_the_full_length(tiny_model_dir):
    from safepref.generate import generation_config, make_backend
    from safepref.records import Prompt

    spec = f"random:tiny-llama?tokenizer={tiny_model_dir}"
    backend = make_backend("hf", spec, device="cpu")
    assert backend.describe() == {"backend": "hf", "name": spec, "random_weights": True}
    location = random_models.resolve(spec)
    marker = random_models.info(location)
    assert marker["random_weights"] is True and marker["architecture"] == "tiny-llama"
    assert json.loads(Path(location, "config.json").read_text())["safepref_random_weights"] is True
    # No answer stops early: every one has max_new_tokens tokens, whatever the random model draws.
    config = generation_config("paper-sample", overrides=["max_new_tokens=7", "num_samples=2"])
    out = backend.model.generate(**backend.encode([Prompt("Hi there", "t")], config),
                                 **backend.generation_kwargs(config))
    assert out.shape[1] - backend.encode([Prompt("Hi there", "t")], config)["input_ids"].shape[1] == 7
    with pytest.raises(ModelError, match="unknown random architecture 'llama-9b'"):
        random_models.parse("random:llama-9b")
    with pytest.raises(ModelError, match=r"\?tokenizer="):
        random_models.parse("random:tiny-llama?tok=x")


def test_plan_of_the_llama_2_paper_config(tmp_path):
    plan = rehearsal_plan(load_experiment(ROOT / "configs" / "paper" / "llama-2-7b.yaml"), 16)
    exp = plan.experiment
    assert exp.target == "random:llama-2-7b" and exp.prompts.limit == 16
    assert exp.prompts.source == "pku-realign" and exp.human == "pku-realign"
    assert exp.answers["stronger"].model == "random:llama-2-13b" and exp.answers["stronger"].backend == "fast"
    assert exp.answers["qwen-2-7b"].model == "random:qwen2-7b"
    assert exp.answers["gpt4o"].model == "random:llama-2-7b" and plan.api == {"gpt4o": "gpt-4o"}
    assert exp.reward_model == "hf:random:deberta-v3-large"
    assert exp.evaluate.jailbreak.prompts == "advbench:16" and exp.evaluate.jailbreak.judges == ["keyword",
                                                                                                 "classifier"]
    assert exp.evaluate.refusal.safe == "xstest-safe:16" and exp.evaluate.general is None
    assert plan.full["prompts"] == 10000 and plan.full["jailbreak"] == 100 and plan.full["api_judges"] == ["rubric"]
    stages, _, rep = rehearsal_stages(exp, Path("/nonexistent"))
    names = [s.name for s in stages]
    assert rep == "self-rm"
    assert names[:8] == ["prompts", "generate/self-greedy", "generate/self-sample", "build/self-rm",
                         "train@as configured/self-rm", "train@full, precomputed reference/self-rm",
                         "train@LoRA (dpo-paper-lora.yaml, adapter unmerged)/self-rm", "generate/gpt4o"]
    assert not any(n.startswith("train/") for n in names) and names[-1] == "audit"
    from safepref.cli import main

    out = Path(tmp_path) / "dry"
    assert main(["run", str(ROOT / "configs" / "paper" / "llama-2-7b.yaml"), "--rehearse", "16", "--dry-run",
                 "--out", str(out)]) == 0
    assert not out.exists()  # the plan only: nothing is written
    with pytest.raises(ConfigError, match="no random twin is known for target 'my/model'"):
        rehearsal_plan(load_experiment(ROOT / "configs" / "paper" / "llama-2-7b.yaml", ["target=my/model"]), 16)


def test_scaling_by_items_and_by_batches():
    work = {"fixed_s": 2.0, "work_s": 4.0, "items": 16}
    assert _scaled(work, 160) == (42.0, 42.0)                 # 2 + 4 x 160/16
    assert _scaled(work, 160, 1, 1) == (6.0, 42.0)            # one batch either way: 2 + 4 x 1/1
    assert _scaled(work, 160, 20, 2) == (42.0, 42.0)          # full batches: both bounds agree


def _tiny_paper(tmp_path: Path, tokenizer_dir: Path) -> Path:
    twin = f"random:tiny-llama?tokenizer={tokenizer_dir}"
    train = tmp_path / "dpo-tiny.yaml"
    train.write_text(yaml.safe_dump({
        "finetune": "lora", "lora": {"r": 4, "alpha": 8}, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1, "max_length": 256, "gradient_checkpointing": False, "save_steps": 0,
        "monitor": {"probe_pairs": 4}}))
    experiment = {
        "name": "tiny-paper", "target": twin,
        "conditions": ["sft", "hc-self", "gpt4o-self", "peer-rm", "self-rm"],
        "prompts": {"source": "pku-realign", "limit": 1000}, "human": "pku-realign",
        "answers": {"gpt4o": {"model": "gpt-4o", "backend": "openai", "set": {"max_new_tokens": 6}},
                    "peer-a": {"model": twin, "backend": "hf", "set": {"max_new_tokens": 6, "prompt_format": "raw"}},
                    "peer-b": {"model": twin, "backend": "hf", "set": {"max_new_tokens": 5, "prompt_format": "chat"}}},
        "roles": {"gpt4o": "gpt4o", "peers": ["peer-a", "peer-b"]},
        "reward_model": f"hf:random:tiny-deberta?tokenizer={tokenizer_dir}",
        "generation": {"greedy": {"max_new_tokens": 6, "prompt_format": "raw"},
                       "sample": {"max_new_tokens": 6, "num_samples": 2, "prompt_format": "raw"}},
        "train": {"config": str(train), "set": {"prompt_format": "raw"}},
        "evaluate": {"jailbreak": {"prompts": "advbench:100", "judges": ["keyword", "rubric"],
                                   "set": {"max_new_tokens": 5}},
                     "refusal": {"set": {"max_new_tokens": 5}}, "general": {"tasks": "paper"}},
        "audit": {"representations": ["length", "refusal"], "folds": 2, "bootstrap": 20},
        "device": "cpu", "seeds": [0, 1, 2],
    }
    path = tmp_path / "tiny-paper.yaml"
    path.write_text(yaml.safe_dump(experiment))
    return path


def test_rehearsal_of_a_tiny_paper_like_config(tiny_model_dir, data_root, tmp_path):
    from safepref.cli import main

    path = _tiny_paper(tmp_path, tiny_model_dir)
    out = tmp_path / "rehearsal"
    assert main(["run", str(path), "--rehearse", "4", "--out", str(out)]) == 0
    report = json.loads((out / "rehearsal.json").read_text())
    measured = report["measured"]
    assert {name: m["status"] for name, m in measured.items()} == {name: "ok" for name in [
        "prompts", "generate/self-greedy", "generate/self-sample", "build/self-rm", "train@as configured/self-rm",
        "generate/gpt4o", "generate/peer-a", "generate/peer-b", "eval/sft", "build/hc-self", "build/gpt4o-self",
        "build/peer-rm", "eval/self-rm", "audit"]}
    # 4 prompts x 2 samples x 6 forced tokens
    sample = measured["generate/self-sample"]
    assert (sample["items"], sample["samples"], sample["max_new_tokens"], sample["batch"]) == (4, 2, 6, 8)
    assert sample["rate"] == pytest.approx(4 * 2 * 6 / sample["work_s"], rel=0.02)
    assert report["full"]["prompts"] == 1000 and report["full"]["seeds"] == 3
    assert report["api_requests"]["gpt4o"] == {"model": "gpt-4o", "requests": 1000}
    # rubric: 100 AdvBench prompts x (sft once + 4 trained conditions x 3 seeds)
    assert report["api_requests"]["judges"]["requests"] == 100 * 13
    rows = {r["stage"]: r for r in report["estimate"]}
    assert rows["generate/gpt4o"]["low_s"] == 0.0
    assert {s for s in rows if s.startswith("train/")} == {f"train/{c}/seed-{s}" for c in
                                                           ("hc-self", "gpt4o-self", "peer-rm", "self-rm")
                                                           for s in (0, 1, 2)}
    # DPO: fixed part + training time scaled to the full run's pairs (pairs per prompt as rehearsed) x epochs
    train = measured["train@as configured/self-rm"]
    pairs = report["pairs_per_prompt"]["peer-rm"] * 1000
    expected = train["fixed_s"] + train["work_s"] * pairs / train["items"]
    assert rows["train/peer-rm/seed-1"]["high_s"] == pytest.approx(expected, abs=0.1)
    # generation on the hf backend (8 prompts a batch): 4 rehearsed prompts fill half a batch
    greedy = measured["generate/self-greedy"]
    low = greedy["fixed_s"] + greedy["work_s"] * math.ceil(1000 / 8) / 1
    assert rows["generate/self-greedy"]["low_s"] == pytest.approx(min(low, rows["generate/self-greedy"]["high_s"]),
                                                                 abs=0.1)
    folder = out / report["measured"]["generate/self-greedy"]["folder"]
    answers = [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines()]
    assert answers and all(a["source"]["random_weights"] is True for a in answers)
    text = (out / "rehearsal.md").read_text()
    assert text.startswith("# Rehearsal of `tiny-paper` on 4 prompts\n\n**Random weights")
    # A rerun measures nothing again.
    assert main(["run", str(path), "--rehearse", "4", "--out", str(out)]) == 0
    again = json.loads((out / "rehearsal.json").read_text())
    assert all(m["reused"] for m in again["measured"].values())



def test_a_stage_out_of_memory_is_recorded_with_its_fix_and_the_rehearsal_goes_on(tmp_path):
    import torch

    from safepref.graph import Stage
    from safepref.rehearse import _run_stages
    from safepref.rehearse_estimate import _fix, _variants

    def too_big(ctx):
        raise torch.OutOfMemoryError("random:llama-3.1-70b: the weights alone need 131.4 GiB in torch.bfloat16")

    stages = [Stage("prompts", lambda ctx: {"prompts": 2}), Stage("generate/stronger", too_big, deps=["prompts"]),
              Stage("build/stronger-self", lambda ctx: {}, deps=["generate/stronger"]),
              Stage("train@as configured/c", too_big), Stage("train@LoRA/c", lambda ctx: {})]
    keys = {s.name: f"k{i}" for i, s in enumerate(stages)}
    results = _run_stages(stages, keys, "c", tmp_path, None, log=lambda line: None)
    assert [results[s.name]["status"] for s in stages] == ["ok", "oom", "skipped", "oom", "ok"]
    assert _fix("generate/stronger", "generate", results["generate/stronger"]).startswith(" -> does not fit one GPU")
    measured = {name: {"rate": None, "peak_gib": None, "wall_s": r.get("wall_s"), "error": r.get("error")}
                for name, r in results.items()}
    variants = _variants(results, measured)
    assert [(v["variant"], v["status"], v.get("fix")) for v in variants] == [
        ("as configured", "oom", "LoRA (measured: fits)"), ("LoRA", "ok", None)]


def test_a_dpo_stage_that_failed_after_training_keeps_its_rate(tmp_path):
    from safepref.rehearse import training_from_metrics
    from safepref.rehearse_estimate import _measure_row

    (tmp_path / "run.json").write_text(json.dumps({"world_size": 1, "config": {
        "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2}}))
    rows = [{"step": 1, "elapsed_s": 30.0, "loss": 0.69}, {"step": 2, "elapsed_s": 40.0, "loss": 0.6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recovered = training_from_metrics(tmp_path)
    assert recovered["training"] == {"steps": 2, "global_batch": 16, "train_seconds": 40.0}
    assert recovered["pairs"] == {"trained": 32}
    record = {"stage": "train@full/original", "status": "error", "error": "No space left on device",
              "wall_s": 100.0, "load_s": 20.0, "summary": recovered}
    row = _measure_row("train@full/original", record, {}, 16)
    assert row["status"] == "error" and row["rate"] == 0.8 and row["work_s"] == 40.0  # 32 pairs in 40 s
    assert training_from_metrics(tmp_path / "missing") is None


def test_a_resumed_dpo_stage_counts_only_the_steps_of_this_run(tmp_path):
    from safepref.rehearse import training_from_metrics

    (tmp_path / "run.json").write_text(json.dumps({"world_size": 2, "config": {"per_device_train_batch_size": 4}}))
    rows = [{"step": 5, "loss": 0.7}, {"step": 6, "elapsed_s": 10.0}, {"step": 8, "elapsed_s": 25.0}]  # resumed at 5
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_from_metrics(tmp_path) == {
        "training": {"steps": 3, "global_batch": 8, "train_seconds": 25.0}, "pairs": {"trained": 24},
        "recovered_from": "metrics.jsonl: the stage failed after these steps"}
