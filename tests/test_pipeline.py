"""`safepref run`: validation before heavy work, every shipped config, and a whole run on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from safepref.cli import main
from safepref.errors import ConfigError
from safepref.pipeline import build_stages, load_experiment, run_experiment

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (sorted((ROOT / "configs").glob("quickstart*.yaml")) + sorted((ROOT / "configs").glob("offline-study*.yaml"))
           + sorted((ROOT / "configs" / "paper").glob("*.yaml")))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_experiment_config_validates(path, tmp_path):
    rows = run_experiment(path, out=tmp_path, dry_run=True)
    names = [r["stage"] for r in rows]
    assert names[0] == "prompts" and names[-1] == "report"
    exp = load_experiment(path)
    seeds = exp.run_seeds()
    for condition in exp.conditions:
        if condition == "sft":
            assert "eval/sft" in names
            continue
        assert f"build/{condition}" in names
        for seed in seeds:
            suffix = "" if len(seeds) == 1 else f"/seed-{seed}"
            assert f"train/{condition}{suffix}" in names and f"eval/{condition}{suffix}" in names


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_bad_experiments_fail_before_any_work(tmp_path):
    base = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    with pytest.raises(ConfigError, match="unknown condition 'self-rn' \\(did you mean 'self-rm'\\?\\)"):
        load_experiment(_write(tmp_path, {**base, "conditions": ["sft", "self-rn"]}))
    with pytest.raises(ConfigError, match="condition 'gpt4o-self' needs GPT-4o answers"):
        load_experiment(_write(tmp_path, {**base, "roles": {"stronger": "alpaca-7b"}, "conditions": ["gpt4o-self"]}))
    with pytest.raises(ConfigError, match="'roles.peers': 'llama' is not a name under `answers`"):
        load_experiment(_write(tmp_path, {**base, "roles": {"peers": ["llama", "gpt4o"]}}))
    with pytest.raises(ConfigError, match="unknown config field 'trian' \\(did you mean 'train'\\?\\)"):
        load_experiment(_write(tmp_path, {**base, "trian": {}}))
    with pytest.raises(ConfigError, match="'prompts.prefer'.*'gpt5' is not a name under `answers`"):
        load_experiment(_write(tmp_path, {**base, "prompts": {"prefer": ["gpt5"]}}))
    with pytest.raises(ConfigError, match="'max_pairs_per_prompt'.*at least 1"):
        load_experiment(_write(tmp_path, {**base, "max_pairs_per_prompt": 0}))
    code = main(["run", str(_write(tmp_path, {**base, "conditions": ["bogus"]})), "--dry-run"])
    assert code == 1


def test_preferred_prompts_come_first_and_the_pair_cap_reaches_build(data_root, tmp_path):
    from safepref.graph import StageContext
    from safepref.records import iter_jsonl

    exp = load_experiment(ROOT / "configs" / "quickstart-gpu.yaml",
                          overrides=["prompts.limit=150", "prompts.prefer=[gpt4o]"])
    stages = {s.name: s for s in build_stages(exp, tmp_path)}
    ctx = StageContext(out_dir=tmp_path, inputs={}, config=stages["prompts"].config)
    summary = stages["prompts"].run(ctx)
    # Offline GPT-4o answered 141 pku-realign prompts: all of them are among the 150, ahead of the others.
    assert summary["prompts"] == 150 and summary["chosen_answered_by"] == {"gpt4o": 141}
    chosen = [row["prompt_id"] for _, row in iter_jsonl(tmp_path / "prompts.jsonl")]
    assert chosen[141:] == sorted(chosen[141:]) and chosen[:141] == sorted(chosen[:141])
    assert stages["build/original"].config["max_per_prompt"] == 1
    uncapped = load_experiment(ROOT / "configs" / "quickstart.yaml", overrides=["max_pairs_per_prompt=null"])
    assert "max_per_prompt" not in {s.name: s for s in build_stages(uncapped, tmp_path)}["build/original"].config


def test_changing_one_setting_recomputes_only_downstream(tmp_path):
    path = ROOT / "configs" / "quickstart.yaml"
    before = {r["stage"]: r["key"] for r in run_experiment(path, out=tmp_path, dry_run=True)}
    after = {r["stage"]: r["key"] for r in run_experiment(path, out=tmp_path, dry_run=True,
                                                          overrides=["train.set.beta=0.2"])}
    changed = {name for name in before if before[name] != after[name]}
    assert "generate/self-sample" not in changed and "build/self-rm" not in changed and "audit" not in changed
    assert {"train/self-rm", "eval/self-rm", "report"} <= changed and "eval/sft" not in changed


def test_seeds_repeat_training_and_evaluation_and_share_the_rest(tmp_path):
    path = ROOT / "configs" / "quickstart.yaml"
    one = {r["stage"]: r["key"] for r in run_experiment(path, out=tmp_path, dry_run=True)}
    # seeds: [0] is the one-seed run it always was: same stages, same cache keys
    assert {r["stage"]: r["key"] for r in run_experiment(path, out=tmp_path, dry_run=True,
                                                         overrides=["seeds=[0]"])} == one
    three = {r["stage"]: r["key"] for r in run_experiment(path, out=tmp_path, dry_run=True,
                                                          overrides=["seeds=[0, 1, 2]"])}
    trained = [c for c in load_experiment(path).conditions if c != "sft"]
    shared = [n for n in one if not n.startswith(("train/", "eval/", "report"))] + ["eval/sft"]
    assert {n: three[n] for n in shared} == {n: one[n] for n in shared}
    for condition in trained:
        assert f"train/{condition}" not in three and f"eval/{condition}" not in three
        keys = {three[f"{kind}/{condition}/seed-{s}"] for kind in ("train", "eval") for s in (0, 1, 2)}
        assert len(keys) == 6
    stages = {s.name: s for s in build_stages(load_experiment(path, ["seeds=[0, 1, 2]"]), tmp_path)}
    assert stages["train/self-rm/seed-2"].config["set"]["seed"] == 2
    assert stages["eval/self-rm/seed-2"].deps == ["train/self-rm/seed-2"]
    assert stages["report"].config["seeds"] == [0, 1, 2]
    assert len(three) == len(one) + 2 * 2 * len(trained)
    with pytest.raises(ConfigError, match="'seeds'.*each once"):
        load_experiment(path, ["seeds=[1, 1]"])


def test_more_prompt_sets_reach_the_evaluation(tmp_path):
    path = ROOT / "configs" / "quickstart.yaml"
    before = {r["stage"]: r["key"] for r in run_experiment(path, out=tmp_path, dry_run=True)}
    exp = load_experiment(path, ["evaluate.jailbreak.sets=[harmbench, donotanswer:50]"])
    stages = {s.name: s for s in build_stages(exp, tmp_path)}
    assert stages["eval/sft"].config["jailbreak"]["sets"] == ["harmbench", "donotanswer:50"]
    assert "sets" not in {s.name: s for s in build_stages(load_experiment(path), tmp_path)}[
        "eval/sft"].config["jailbreak"]
    after = {r["stage"]: r["key"] for r in run_experiment(path, out=tmp_path, dry_run=True,
                                                          overrides=["evaluate.jailbreak.sets=[harmbench]"])}
    assert {n for n in before if before[n] != after[n]} == {n for n in before if n.startswith("eval/")} | {"report"}
    with pytest.raises(ConfigError, match=r"two prompt sets share a name \(jailbreak-harmbench\)"):
        load_experiment(path, ["evaluate.jailbreak.sets=[harmbench, harmbench]"])


def test_every_stage_calls_a_library_function_never_the_command_line(tmp_path, monkeypatch):
    """pipeline.py imports no command module; each stage's work is a library call on a typed config, logged as
    the `safepref ...` command it equals (quickstart: every stage kind, reward-model training included)."""
    import ast

    from safepref import cli, pipeline
    from safepref.graph import StageContext

    tree = ast.parse((ROOT / "src" / "safepref" / "pipeline.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m == "safepref.cli" or m.startswith("safepref.commands")}
    monkeypatch.setattr(cli, "main", lambda *a: pytest.fail("a stage called the command line"))
    calls = []
    monkeypatch.setattr(pipeline, "_library_stage", lambda function, config, argv: calls.append(
        (function.__module__, function.__name__, type(config).__name__, argv[:2])) or {})
    stages = build_stages(load_experiment(ROOT / "configs" / "quickstart.yaml"), tmp_path)
    for stage in stages:
        if stage.name not in ("prompts", "report"):
            stage.run(StageContext(tmp_path / "out", {d: tmp_path / d for d in stage.deps}, stage.config))
    kinds = {(module, function, config, tuple(argv)) for module, function, config, argv in calls}
    assert kinds == {
        ("safepref.stages", "generate", "GenerateCall", ("generate", "--model")),
        ("safepref.stages", "train_rm", "RMTrainCall", ("rm", "train")),
        ("safepref.build", "build_set", "BuildConfig", ("build", "self-rm")),
        ("safepref.build", "build_set", "BuildConfig", ("build", "original")),
        ("safepref.build", "build_set", "BuildConfig", ("build", "hc-self")),
        ("safepref.build", "build_set", "BuildConfig", ("build", "gpt4o-self")),
        ("safepref.build", "build_set", "BuildConfig", ("build", "stronger-self")),
        ("safepref.build", "build_set", "BuildConfig", ("build", "peer-rm")),
        ("safepref.build", "build_set", "BuildConfig", ("build", "all-rm")),
        ("safepref.stages", "audit", "AuditCall", ("audit", "--pairs")),
        ("safepref.stages", "train", "TrainCall", ("train", "--pairs")),
        ("safepref.stages", "jailbreak", "JailbreakCall", ("eval", "jailbreak")),
        ("safepref.stages", "refusal", "RefusalCall", ("eval", "refusal")),
    }


def test_the_reward_model_stage_trains_what_the_command_trains(tmp_path):
    """The rm/train stage's library call and `safepref rm train` with the same options save the same head."""
    from safepref import stages as st

    call = st.RMTrainCall.from_options("t", str(tmp_path / "lib"), 0, {"limit": 100, "embedder": "hashing", "hidden": 0})
    argv = call.argv()
    assert argv == ["rm", "train", "--name", "t", "--out", str(tmp_path / "lib"), "--overwrite", "--seed", "0",
                    "--embedder", "hashing", "--hidden", "0", "--limit", "100"]
    meta = st.train_rm(call, command="safepref " + " ".join(argv))
    assert main([*argv[:5], str(tmp_path / "cli"), *argv[6:]]) == 0  # the same, with --out cli
    for name in ("head.safetensors", "seen_prompt_ids.txt"):
        assert (tmp_path / "lib" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    assert meta["command"] == "safepref " + " ".join(argv)
    assert json.loads((tmp_path / "lib" / "rm.json").read_text())["best_epoch"] == meta["best_epoch"]


@pytest.mark.slow
def test_whole_run_on_a_tiny_model_and_resume(tiny_model_dir, data_root, tmp_path):
    experiment = {
        "name": "tiny",
        "target": str(tiny_model_dir),
        "conditions": ["sft", "hc-self", "gpt4o-self", "original", "self-rm"],
        "prompts": {"source": "pku-realign", "limit": 6, "covered_by": ["gpt4o"]},
        "human": "pku-realign",
        "answers": {"gpt4o": {"source": "gpt4o"}},
        "roles": {"gpt4o": "gpt4o"},
        "reward_model": "length",
        # no_repeat_ngram_size=1: a random tiny model otherwise repeats one token (often a newline)
        "generation": {"greedy": {"max_new_tokens": 12, "no_repeat_ngram_size": 1},
                       "sample": {"max_new_tokens": 12, "num_samples": 3, "no_repeat_ngram_size": 1}},
        "train": {"config": str(ROOT / "configs" / "train" / "dpo-smollm2-lora.yaml"),
                  "set": {"max_steps": 2, "per_device_train_batch_size": 2}},
        "evaluate": {"jailbreak": {"prompts": "advbench:4", "judges": ["keyword"], "sets": ["harmbench:3"],
                                   "set": {"max_new_tokens": 8, "no_repeat_ngram_size": 1}},
                     "refusal": {"safe": "xstest-safe:4", "unsafe": "xstest-unsafe:2", "set": {"max_new_tokens": 8}}},
        "audit": {"representations": ["hidden:auto", "length", "refusal"], "folds": 2, "bootstrap": 20},
        "device": "cpu",
        "seeds": [0, 1],
    }
    path = _write(tmp_path, experiment)
    out = tmp_path / "run"
    results = run_experiment(path, out=out)
    assert set(results) >= {"prompts", "build/hc-self", "train/self-rm/seed-1", "eval/sft", "audit", "report"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["missing"] == []
    assert summary["prompt_sets"] == {"jailbreak": "advbench:4", "jailbreak-harmbench-3": "harmbench:3"}
    for condition in experiment["conditions"]:
        row = summary["conditions"][condition]
        seeds = [0] if condition == "sft" else [0, 1]
        # the pooled rate counts every seed's answers, each seed's equals that evaluation's metrics.json
        entry = row["rates"]["asr/jailbreak/keyword"]
        per_seed = [row["seeds"][str(s)]["jailbreak"]["jailbreak"]["judges"]["keyword"] for s in seeds]
        assert entry["n"] == 4 * len(seeds) and entry["k"] == sum(j["harmful"] for j in per_seed), condition
        assert row["rates"]["asr/jailbreak-harmbench-3/keyword"]["n"] == 3 * len(seeds)
        assert row["rates"]["asr/pooled/keyword"]["n"] == 7 * len(seeds)
        assert row["rates"]["over_refusal/opening"]["n"] == 4 * len(seeds)
        assert row["rates"]["compliance/keyword"]["n"] == 2 * len(seeds)
        if condition != "sft":
            assert row["datasheet"]["rows"] > 0
            assert [row["seeds"][str(s)]["monitor"]["steps"] for s in seeds] == [2, 2]
            assert row["audit"]["best_auc"] == max(row["audit"]["auc"].values())
    # every trained condition against SFT, and against Self+RM, in each metric's family
    families = {r["metric"] for r in summary["comparisons"]}
    assert "asr/pooled/keyword" in families and "compliance/opening" in families
    asr_rows = [r for r in summary["comparisons"] if r["metric"] == "asr/jailbreak/keyword"]
    assert len(asr_rows) == 4 + 3 and all(r["holm_family"] == 7 for r in asr_rows)
    assert (out / "report.md").read_text().startswith("# safepref report: tiny")
    assert "asr.png" in summary["figures"]
    # A rerun is all cached; a changed evaluation setting reruns evaluation and the report only.
    rows = run_experiment(path, out=out, dry_run=True)
    assert all(r["cached"] for r in rows)
    rows = run_experiment(path, out=out, dry_run=True, overrides=["evaluate.jailbreak.prompts=advbench:3"])
    assert {r["stage"] for r in rows if not r["cached"]} == {f"eval/{c}/seed-{s}" for c in experiment["conditions"]
                                                             for s in (0, 1) if c != "sft"} | {"eval/sft", "report"}
    stages = build_stages(load_experiment(path), out)
    assert len(stages) == len(rows)
    # A run folder copied elsewhere (the original gone) still reports: index.json paths are relative.
    import shutil

    from safepref.report import write_report

    moved = tmp_path / "moved"
    shutil.move(out, moved)
    assert write_report(moved)["missing_stages"] == []
    assert json.loads((moved / "summary.json").read_text())["conditions"] == summary["conditions"]
