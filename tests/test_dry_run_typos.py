"""`safepref run --dry-run` rejects a typo anywhere in an experiment YAML before any work, naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from safepref.cli import main
from safepref.config import deep_merge
from safepref.stages import RMTrainCall

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())

# (what the test changes in configs/quickstart.yaml, the key the error must name, a word of the message)
TYPOS = [
    ({"train": {"set": {"betta": 0.1}}}, "train.set.betta", "did you mean 'beta'"),
    ({"train": {"set": {"lora.rr": 8}}}, "train.set.lora.rr", "did you mean 'r'"),
    ({"train": {"set": {"beta": -1}}}, "train.set", "beta"),
    ({"train": {"config": "configs/train/nope.yaml"}}, "train.config", "file not found"),
    ({"generation": {"sample": {"temprature": 0.5}}}, "generation.sample.temprature", "temperature"),
    ({"generation": {"greedy": {"max_new_token": 5}}}, "generation.greedy.max_new_token", "max_new_tokens"),
    ({"generation": {"greedy": {"top_p": 2}}}, "generation.greedy", "top_p"),
    ({"generation": {"backend": "vlm"}}, "generation.backend", "unknown generation backend"),
    ({"answers": {"peer": {"model": "org/m", "preset": "paper-greedyy"}}}, "answers.peer.preset",
     "did you mean 'paper-greedy'"),
    ({"answers": {"peer": {"model": "org/m", "set": {"temprature": 1}}}}, "answers.peer.set.temprature",
     "temperature"),
    ({"answers": {"gpt4o": {"source": "gpt4oo"}}}, "answers.gpt4o.source", "unknown source"),
    ({"answers": {"gpt4o": {"source": "missing/answers.jsonl"}}}, "answers.gpt4o.source", "file not found"),
    ({"reward_training": {"limt": 300}}, "reward_training.limt", "did you mean 'limit'"),
    ({"reward_training": {"kind": "finetuned", "dropout": 0.1}}, "reward_training.dropout", "kind finetuned"),
    ({"target": "smollm2-135m-instruc"}, "target", "unknown model"),
    ({"target": "random:llama-9"}, "target", "unknown random architecture"),
    ({"prompts": {"source": "pku-realing"}}, "prompts.source", "unknown source"),
    ({"human": "pku-realing"}, "human", "unknown source"),
    ({"reward_model": "ofline:safety-minilm"}, "reward_model", "did you mean 'offline:…'"),
    ({"evaluate": {"jailbreak": {"judges": ["safety", "kyword"]}}}, "evaluate.jailbreak.judges[1]",
     "did you mean 'keyword'"),
    ({"evaluate": {"jailbreak": {"sets": ["harmbnch"]}}}, "evaluate.jailbreak.sets[0]", "unknown source"),
    ({"evaluate": {"jailbreak": {"set": {"max_new_tokns": 8}}}}, "evaluate.jailbreak.set.max_new_tokns",
     "max_new_tokens"),
    ({"evaluate": {"refusal": {"unsafe": "xstest-unsafee:12"}}}, "evaluate.refusal.unsafe", "unknown source"),
    ({"audit": {"representations": ["hidden:auto", "lenght"]}}, "audit.representations[1]",
     "did you mean 'length'"),
]


@pytest.mark.parametrize(("change", "key", "words"), TYPOS, ids=[t[1] for t in TYPOS])
def test_a_typo_fails_the_dry_run_naming_its_key(change, key, words, tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(deep_merge(BASE, change)))
    code = main(["run", str(path), "--dry-run", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"'{key}" in err and words.lower() in err.lower()
    assert not (tmp_path / "run").exists()  # nothing was written: the check came before any work


def test_the_unchanged_config_passes(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "run")]) == 0


def test_reward_training_fields_reach_rm_train_as_set():
    # `rm train` options stay options (the default kind is left out); a config field without one goes
    # through --set; the stage's own options come first, the rest by key
    call = RMTrainCall.from_options("n", "o", 1, {"limit": 300, "dropout": 0.2, "kind": "head", "pairs": "a.jsonl"})
    assert (call.limit, call.pairs, call.set, call.seed, call.overwrite) == (300, ["a.jsonl"], ["dropout=0.2"], 1, True)
    assert call.argv() == ["rm", "train", "--name", "n", "--out", "o", "--overwrite", "--seed", "1",
                           "--set", "dropout=0.2", "--limit", "300", "--pairs", "a.jsonl"]


def test_finetuned_rm_stage_key_holds_the_recipe_version(tmp_path, monkeypatch):
    # a changed preset recipe (RECIPE_VERSION) must retrain rm/train, not reuse the earlier stage's model;
    # the head kind's key is left as it was (cached runs of it stay valid); the cache key hashes this config
    from safepref.pipeline import build_stages, load_experiment
    from safepref.reward import finetuned

    def rm_stage(recipe: int, kind: str):
        monkeypatch.setattr(finetuned, "RECIPE_VERSION", recipe)
        exp = load_experiment(ROOT / "configs" / "quickstart.yaml",
                              [f"reward_training={{kind: {kind}}}", "reward_model=offline:safety-smollm2"])
        return next(s for s in build_stages(exp, tmp_path) if s.name == "rm/train")

    assert rm_stage(2, "finetuned").config["recipe_version"] == 2
    assert rm_stage(2, "finetuned").config != rm_stage(3, "finetuned").config
    assert "recipe_version" not in rm_stage(2, "head").config


def test_smollm2_preset_trains_on_hh_training_prompts():
    # the GPU preset adds hh-rlhf harmless as a pair source and excludes nothing, so `rm eval` on hh-harmless
    # scores its held-out prompts only; the CPU preset keeps hh-rlhf out of training
    from safepref.reward.finetuned import FinetunedRMConfig, pick_preset

    smol = pick_preset("smollm2", "cpu")
    assert (smol["pairs"], smol["exclude"]) == (["pku-realign", "pku-paper", "hh-harmless"], [])
    cpu = {k: v for k, v in pick_preset("minilm-cpu", "cpu").items() if k != "preset"}
    assert (FinetunedRMConfig(**cpu).pairs, FinetunedRMConfig(**cpu).exclude) == (["pku-realign", "pku-paper"],
                                                                                 ["hh-harmless"])
