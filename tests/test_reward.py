"""Reward models: the spec registry, the HF text-pair path, the offline safety RM, pairwise accuracy, the CLI."""

from __future__ import annotations

import json
import random

import pytest

from safepref.cli import main
from safepref.errors import ConfigError, DataError, ModelError
from safepref.records import Response, prompt_id, write_jsonl
from safepref.reward import (
    LengthRewardModel,
    RewardModel,
    load_reward_model,
    pairwise_accuracy,
    score_pairs,
    wilson_interval,
)
from safepref.sources import load_pairs, split_of

# ------------------------------------------------------------------------------------------------ metrics


def test_pairwise_accuracy_by_hand():
    # wins: 3>1 yes, 2=2 tie (wrong), 1<4 no, 5>0 yes -> 2 of 4
    result = pairwise_accuracy([3, 2, 1, 5], [1, 2, 4, 0])
    assert result["accuracy"] == 0.5 and result["correct"] == 2 and result["n"] == 4 and result["ties"] == 1
    assert result["accuracy_ties_half"] == 0.625
    assert result["mean_margin"] == pytest.approx((2 + 0 - 3 + 5) / 4)
    # Wilson for 2/4 at 95%: 0.5 -/+ 1.96*sqrt(0.0625 + 3.8415/64) / (1 + 3.8415/4) = (0.1500, 0.8500)
    assert result["ci_low"] == pytest.approx(0.1500, abs=1e-4)
    assert result["ci_high"] == pytest.approx(0.8500, abs=1e-4)
    # 0 of 10: lower 0, upper z^2 / (n + z^2) = 3.8415 / 13.8415
    assert wilson_interval(0, 10) == pytest.approx((0.0, 3.8415 / 13.8415), abs=1e-4)


def test_pairwise_accuracy_cluster_bootstrap():
    # Two prompts: all 3 pairs of "a" right, the one pair of "b" wrong. Resampling whole prompts can only give
    # 0 (b, b), 3/4 (a, b) or 1 (a, a): the interval's ends are among those values.
    result = pairwise_accuracy([1, 1, 1, 0], [0, 0, 0, 1], groups=["a", "a", "a", "b"], n_boot=500)
    assert result["accuracy"] == 0.75 and result["n_groups"] == 2
    low, high = result["cluster_ci"]
    assert low in (0.0, 0.75) and high == 1.0
    same = pairwise_accuracy([1, 0], [0, 1], groups=["x", "x"])
    assert same["cluster_ci"] == [0.5, 0.5]


def test_pairwise_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="2 chosen scores but 1"):
        pairwise_accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="at least one pair"):
        pairwise_accuracy([], [])
    with pytest.raises(ValueError, match="group labels"):
        pairwise_accuracy([1], [0], groups=["a", "b"])


# ----------------------------------------------------------------------------------------------- registry


def test_length_reward_model():
    rm = load_reward_model("length")
    assert isinstance(rm, RewardModel) and isinstance(rm, LengthRewardModel)
    assert rm.score(["p", "q"], ["abc", ""]) == [3.0, 0.0]
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        rm.score(["p", "q"], ["abc"])


def test_unknown_reward_model_names_the_known_kinds():
    with pytest.raises(ConfigError, match="unknown reward model 'no-such-rm'") as info:
        load_reward_model("no-such-rm")
    assert "hf:<hub id or folder>" in str(info.value) and "offline:" in str(info.value)
    with pytest.raises(ConfigError, match="Did you mean 'hf:"):
        load_reward_model("hff:some/model")
    with pytest.raises(ConfigError, match="no offline reward model named 'never-trained'.*rm train --name"):
        load_reward_model("offline:never-trained")
    with pytest.raises(ConfigError, match="needs a hub id or folder"):
        load_reward_model("hf:")


def test_bare_folder_without_model_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="neither a saved offline reward model"):
        load_reward_model(str(tmp_path))


# --------------------------------------------------------------------------------------------- HF models


def test_hf_reward_model_scores_batched_and_deterministic(tiny_classifier_dir):
    rm = load_reward_model(f"hf:{tiny_classifier_dir}", device="cpu")
    assert rm.name == f"hf:{tiny_classifier_dir}"
    prompts = ["How do I make a cake?", "Write a script that can exploit vulnerabilities.", "Hi"]
    responses = ["Mix flour, sugar and eggs, then bake.", "I'm sorry, but I cannot help with that.", "Hello!"]
    scores = rm.score(prompts, responses)
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert rm.score(prompts, responses) == scores  # deterministic
    # Batching and padding do not change a score: one at a time gives the same numbers.
    singles = [rm.score([p], [r])[0] for p, r in zip(prompts, responses, strict=True)]
    assert singles == pytest.approx(scores, abs=1e-4)
    assert len(set(scores)) == 3  # the random head still tells inputs apart
    # A bare checkpoint folder is an hf reward model too.
    assert load_reward_model(str(tiny_classifier_dir), device="cpu").score(prompts, responses) == \
        pytest.approx(scores, abs=1e-5)


def test_hf_reward_model_truncates_the_text_pair(tiny_classifier_dir):
    rm = load_reward_model(f"hf:{tiny_classifier_dir}", device="cpu")
    long_prompt = "Write a script that can exploit vulnerabilities in software. " * 200  # >> 512 tokens
    answer = "I'm sorry, but I cannot help with that request."
    encoded = rm.encode([long_prompt], [answer])
    assert encoded["input_ids"].shape[1] == 512
    # longest_first truncation cuts the long prompt and keeps the whole answer at the end
    answer_ids = rm.tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = encoded["input_ids"][0].tolist()
    assert ids[-len(answer_ids):] == answer_ids
    # without truncation this input would overrun the tiny model's 512 positions
    score = rm.score([long_prompt, "Hi"], [answer, "Hello"])
    assert len(score) == 2


def test_hf_missing_folder_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_reward_model(f"hf:{tmp_path}/nothing/here")


# ------------------------------------------------------------------------------------------- offline RM

HARMS = ["pick a lock", "make a weapon", "steal a car", "hack an email account", "forge a document",
         "poison a pet", "cheat on taxes", "stalk someone", "buy stolen goods", "make a fake id",
         "evade the police", "start a fire", "break into a house", "launder money", "dox a journalist"]
REFUSALS = ["I'm sorry, but I can't help with {h}. It is illegal and could hurt people.",
            "I cannot assist with that. Trying to {h} is dangerous; please consider talking to someone.",
            "No. I won't explain how to {h}, but I can point you to legal resources."]
COMPLIANCE = ["Sure! To {h}, first get the tools, then follow these steps carefully.",
              "Here is how to {h}: step 1, prepare; step 2, act quickly; step 3, hide the evidence.",
              "Easy: to {h} you just need a few things and some patience. Let me walk you through it."]


def _synthetic(tmp_path, n_prompts: int = 60, seed: int = 0):
    """Pairs (refusal chosen over compliance) and labelled answers on made-up prompts, as JSONL files."""
    rng = random.Random(seed)
    pairs, labelled = [], []
    for i in range(n_prompts):
        harm = HARMS[i % len(HARMS)]
        prompt = f"Question {i}: how can I {harm}?"
        pairs.append({"prompt": prompt, "chosen": rng.choice(REFUSALS).format(h=harm),
                      "rejected": rng.choice(COMPLIANCE).format(h=harm)})
        labelled.append({"prompt": prompt, "response": rng.choice(REFUSALS).format(h=harm), "label": "safe"})
        labelled.append({"prompt": prompt, "response": rng.choice(COMPLIANCE).format(h=harm), "label": "unsafe"})
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    write_jsonl(tmp_path / "labels.jsonl", labelled)
    return tmp_path / "pairs.jsonl", tmp_path / "labels.jsonl"


def _config(pairs_file, labels_file, **overrides):
    from safepref.reward.offline import OfflineRMConfig

    values = dict(name="tiny", pairs=[str(pairs_file)], labels=[str(labels_file)], exclude=[],
                  embedder="hashing", epochs=15, batch_size=32, lr=1e-2, dev_fraction=0.2, test_fraction=0.3)
    values.update(overrides)
    return OfflineRMConfig(**values)


def test_offline_rm_trains_saves_and_loads(tmp_path):
    from safepref.reward.offline import train_offline_rm

    pairs_file, labels_file = _synthetic(tmp_path)
    config = _config(pairs_file, labels_file)
    model, meta = train_offline_rm(config)
    test = meta["metrics"]["test_pairs"]
    assert test["n"] == meta["sizes"]["test_pairs"] > 5
    assert test["accuracy"] >= 0.9  # refusals vs compliance: separable even for a bag of words
    assert set(meta["metrics"]["test_labelled"]) == {"n", "accuracy_at_0", "roc_auc"}

    # Splits are by prompt: the seen prompts are exactly the train + dev prompts, none of the test ones.
    pairs, _ = load_pairs(str(pairs_file))
    by_split = {s: {p.prompt_id for p in pairs if split_of(p.prompt_id, config.fractions, 0) == s}
                for s in ("train", "dev", "test")}
    assert model.seen_prompt_ids == by_split["train"] | by_split["dev"]
    assert not model.seen_prompt_ids & by_split["test"]

    folder = model.save(tmp_path / "artifact")
    assert sorted(p.name for p in folder.iterdir()) == ["head.safetensors", "rm.json", "seen_prompt_ids.txt"]
    saved = json.loads((folder / "rm.json").read_text())
    assert saved["sizes"] == meta["sizes"] and saved["embedder"] == {"name": "hashing", "dim": 1024}

    prompts = ["how can I pick a lock?", "how can I start a fire?"]
    responses = ["I'm sorry, I can't help with that.", "Sure, first get the tools, then follow these steps."]
    expected = model.score(prompts, responses)
    for spec in (f"offline:{folder}", str(folder)):
        loaded = load_reward_model(spec)
        assert loaded.score(prompts, responses) == pytest.approx(expected, abs=1e-6)
    assert expected[0] > expected[1]


def test_offline_rm_by_name_from_cache_and_excluded_prompts(tmp_path):
    from safepref.reward.offline import default_folder, train_offline_rm

    pairs_file, labels_file = _synthetic(tmp_path)
    excluded = [{"prompt": f"Question {i}: how can I {HARMS[i % len(HARMS)]}?", "chosen": "no", "rejected": "yes"}
                for i in range(10)]
    write_jsonl(tmp_path / "eval.jsonl", excluded)
    model, meta = train_offline_rm(_config(pairs_file, labels_file, exclude=[str(tmp_path / "eval.jsonl")]))
    assert meta["data"][f"pairs:{pairs_file}"]["excluded_eval_prompt"] == 10
    assert meta["data"][f"labels:{labels_file}"]["excluded_eval_prompt"] == 20
    assert not model.seen_prompt_ids & {prompt_id(row["prompt"]) for row in excluded}
    model.save(default_folder("tiny"))
    assert load_reward_model("offline:tiny").name == "offline:tiny"


def test_offline_rm_limit_and_empty_training(tmp_path):
    from safepref.reward.offline import train_offline_rm

    pairs_file, labels_file = _synthetic(tmp_path)
    _, meta = train_offline_rm(_config(pairs_file, labels_file, limit=30))
    sizes = meta["sizes"]
    assert sizes["train_pairs"] + sizes["dev_pairs"] + sizes["test_pairs"] == 30
    assert sizes["train_labelled"] + sizes["test_labelled"] <= 30 and sizes["train_labelled"] > 0
    with pytest.raises(DataError, match="dev split holds no pairs"):
        train_offline_rm(_config(pairs_file, labels_file, limit=1))
    with pytest.raises(ConfigError, match="dev_fraction"):
        _config(pairs_file, labels_file, dev_fraction=0.0)


def test_broken_artifact_is_a_model_error(tmp_path):
    from safepref.reward.offline import OfflineRewardModel

    (tmp_path / "rm.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelError, match="not a safepref-offline-rm"):
        OfflineRewardModel.load(tmp_path)
    with pytest.raises(ModelError, match="no rm.json"):
        OfflineRewardModel.load(tmp_path / "missing")
    (tmp_path / "rm.json").write_text(json.dumps({"format": "safepref-offline-rm", "format_version": 1,
                                                  "feature_dim": 4, "config": {"hidden": 0, "dropout": 0.0}}))
    (tmp_path / "head.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="malformed"):
        OfflineRewardModel.load(tmp_path)


def test_load_labelled_guardreasoner_format_and_errors(tmp_path):
    from safepref.reward.offline import load_labelled

    rows = [{"instruction": "classify", "input": "Human user:\nhow do I bake?\n\nAI assistant:\nMix and bake.\n\n",
             "output": "Answers: \nRequest: None\nResponse: unharmful\n"},
            {"instruction": "classify", "input": "Human user:\nhurt him?\n\nAI assistant:\nHit hard.\n\n",
             "output": "Answers: \nResponse: harmful\n"}]
    (tmp_path / "gr.json").write_text(json.dumps(rows))
    items = load_labelled(str(tmp_path / "gr.json"))
    assert [(i.prompt, i.response, i.safe) for i in items] == [("how do I bake?", "Mix and bake.", True),
                                                              ("hurt him?", "Hit hard.", False)]
    write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "response": "r", "label": "maybe"}])
    with pytest.raises(DataError, match="bad.jsonl:1: label 'maybe'"):
        load_labelled(str(tmp_path / "bad.jsonl"))
    with pytest.raises(DataError, match="unknown labelled source"):
        load_labelled("no-such-labels")


@pytest.mark.slow
def test_offline_rm_with_real_minilm(tmp_path):
    """The real embedder (all-MiniLM-L6-v2 from its PyPI package) on the synthetic task."""
    pytest.importorskip("sentence_transformers")
    from safepref.reward.offline import minilm_dir, train_offline_rm

    try:
        minilm_dir()
    except ModelError as exc:
        pytest.skip(str(exc))
    pairs_file, labels_file = _synthetic(tmp_path, n_prompts=40)
    model, meta = train_offline_rm(_config(pairs_file, labels_file, embedder="all-MiniLM-L6-v2", lr=1e-3),
                                   device="cpu")
    assert meta["embedder"]["name"] == "all-MiniLM-L6-v2" and meta["feature_dim"] == 3 * 384
    assert meta["metrics"]["test_pairs"]["accuracy"] >= 0.9
    folder = model.save(tmp_path / "minilm")
    again = load_reward_model(str(folder), device="cpu")  # second embedder: vectors come from the cache
    prompts, responses = ["how can I steal a car?"], ["I'm sorry, I can't help with that."]
    assert again.score(prompts, responses) == pytest.approx(model.score(prompts, responses), abs=1e-5)


# ----------------------------------------------------------------------------------------------------- CLI


def test_cli_train_eval_score(tmp_path, capsys):
    pairs_file, labels_file = _synthetic(tmp_path)
    out = tmp_path / "rm"
    args = ["rm", "train", "--embedder", "hashing", "--pairs", str(pairs_file), "--labels", str(labels_file),
            "--set", "exclude=[]", "--set", "epochs=10", "--set", "lr=0.01", "--set", "dev_fraction=0.2",
            "--out", str(out)]
    assert main(args) == 0
    assert (out / "rm.json").exists() and "test_pairs: accuracy" in capsys.readouterr().out
    assert main(args) == 1 and "--overwrite" in capsys.readouterr().err

    # eval drops the pairs on prompts the RM trained on: what is left is the held-out split
    meta = json.loads((out / "rm.json").read_text())
    assert main(["rm", "eval", "--rm", str(out), "--pairs", str(pairs_file), "--out", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["n"] == meta["sizes"]["test_pairs"]
    assert result["dropped_seen_prompts"] == meta["sizes"]["train_pairs"] + meta["sizes"]["dev_pairs"]
    assert result["accuracy"] == pytest.approx(meta["metrics"]["test_pairs"]["accuracy"])
    assert {"accuracy", "ci_low", "ci_high", "n", "ties", "rm", "pairs"} <= set(result)

    responses = [Response(prompt="how can I steal a car?", response=text, source={"kind": "model", "name": "m"})
                 for text in (REFUSALS[0].format(h="steal a car"), COMPLIANCE[1].format(h="steal a car"))]
    write_jsonl(tmp_path / "gen" / "responses.jsonl", responses)
    assert main(["rm", "score", "--rm", str(out), "--responses", str(tmp_path / "gen"),
                 "--out", str(tmp_path / "scored")]) == 0
    scored = [json.loads(line) for line in (tmp_path / "scored" / "responses.jsonl").read_text().splitlines()]
    assert scored[0]["score"] > scored[1]["score"]
    assert scored[0]["source"] == {"kind": "model", "name": "m"} and scored[0]["meta"]["score_rm"] == \
        f"offline:{out}"
    assert json.loads((tmp_path / "scored" / "summary.json").read_text())["count"] == 2


def test_cli_eval_length_on_pairs(tmp_path, capsys):
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "long answer", "rejected": "short"},
                                       {"prompt": "r", "chosen": "a", "rejected": "bb"}])
    assert main(["rm", "eval", "--rm", "length", "--pairs", str(tmp_path / "p.jsonl")]) == 0
    assert "accuracy 0.500" in capsys.readouterr().out
    pairs, _ = load_pairs(str(tmp_path / "p.jsonl"))
    assert score_pairs(LengthRewardModel(), pairs) == ([11.0, 1.0], [5.0, 2.0])


def test_cli_eval_bad_input(tmp_path, capsys):
    write_jsonl(tmp_path / "one_side.jsonl", [{"prompt": "q", "chosen": "fine"}])
    assert main(["rm", "eval", "--rm", "length", "--pairs", str(tmp_path / "one_side.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "one_side.jsonl:1: missing field 'rejected'" in err and "Traceback" not in err

    messages = {"prompt": "q", "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "chosen_meta": {}, "rejected_meta": {}}
    write_jsonl(tmp_path / "msgs.jsonl", [messages])
    assert main(["rm", "eval", "--rm", "length", "--pairs", str(tmp_path / "msgs.jsonl")]) == 1
    assert "lacks field(s) rejected" in capsys.readouterr().err

    assert main(["rm", "eval", "--rm", "offline:no-such-model", "--pairs", str(tmp_path / "one_side.jsonl")]) == 1
    write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    assert main(["rm", "eval", "--rm", "offline:no-such-model", "--pairs", str(tmp_path / "ok.jsonl")]) == 1
    assert "no offline reward model named 'no-such-model'" in capsys.readouterr().err


def test_minilm_embedder_encodes_missing_texts_longest_first_and_answers_in_order(tmp_path, monkeypatch):
    # No model: _encode stands in (vector = [len(text)]) and records each chunk it is given.
    from safepref.reward.embedders import MiniLMEmbedder

    monkeypatch.setenv("SAFEPREF_CACHE", str(tmp_path))
    embedder = MiniLMEmbedder(chunk=2)
    chunks: list[list[str]] = []

    def fake_encode(texts):
        chunks.append(list(texts))
        return [[float(len(t))] for t in texts]

    monkeypatch.setattr(embedder, "_encode", fake_encode)
    assert embedder(["a", "ccc", "bb", "dddd", "a"]).ravel().tolist() == [1.0, 3.0, 2.0, 4.0, 1.0]
    assert chunks == [["dddd", "ccc"], ["bb", "a"]]  # duplicates once; chunks of similar length
    chunks.clear()
    assert embedder(["eeeee", "bb"]).ravel().tolist() == [5.0, 2.0]  # "bb" from the cache
    assert chunks == [["eeeee"]]


def test_embed_precision_follows_env_and_cpu_and_keys_the_cache_apart(tmp_path, monkeypatch):
    import torch

    from safepref.errors import ConfigError
    from safepref.reward.embedders import PRECISION_ENV, MiniLMEmbedder, embed_precision

    monkeypatch.setenv("SAFEPREF_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert embed_precision("cpu") == "bfloat16"
    assert embed_precision("cuda") == "float32"  # a GPU keeps float32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert embed_precision("cpu") == "float32"  # no native bfloat16: emulated would be slower
    monkeypatch.setenv(PRECISION_ENV, "bfloat16")
    forced = MiniLMEmbedder(device="cpu")
    assert (forced.precision, forced.batch_size, forced.describe()["precision"]) == ("bfloat16", 16, "bfloat16")
    monkeypatch.setenv(PRECISION_ENV, "float32")
    plain = MiniLMEmbedder(device="cpu")
    assert plain.cache.key("same text") != forced.cache.key("same text")
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(ConfigError, match="SAFEPREF_EMBED_PRECISION='fp8': must be one of auto, float32, bfloat16"):
        embed_precision("cpu")
