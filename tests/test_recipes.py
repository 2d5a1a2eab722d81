"""Recipes (pure functions, hand-worked numbers) and the `safepref build` command (tiny files, CLI errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safepref import cli
from safepref.errors import DataError
from safepref.recipes import (
    CONDITIONS,
    RECIPES,
    hc_self,
    original,
    pool_rm,
    self_rm,
    x_self,
    x_self_rm,
)
from safepref.records import PreferencePair, Response, prompt_id, read_pairs, write_jsonl

GREEDY = {"kind": "model", "name": "target", "generation": {"do_sample": False}}
SAMPLE = {"kind": "model", "name": "target", "generation": {"do_sample": True}}


def resp(prompt: str, text: str, score: float | None = None, index: int = 0,
         source: dict | None = None) -> Response:
    return Response(prompt=prompt, response=text, source=source or {"kind": "dataset", "name": "src"},
                    sample_index=index, score=score)


def human_pair(prompt: str, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(prompt=[{"role": "user", "content": prompt}],
                          chosen=[{"role": "assistant", "content": chosen}],
                          rejected=[{"role": "assistant", "content": rejected}],
                          chosen_meta={"source": {"kind": "dataset", "name": "pku", "side": "chosen"}},
                          rejected_meta={"source": {"kind": "dataset", "name": "pku", "side": "rejected"}},
                          recipe="original")


class FakeRM:
    """Same two members as safepref.reward's RewardModel: scores from a fixed table of answer texts."""

    name = "fake-table"

    def __init__(self, table: dict[str, float]):
        self.table = table

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [self.table[r] for r in responses]


def scored(rm: FakeRM, responses: list[Response]) -> list[Response]:
    for r, s in zip(responses, rm.score([r.prompt for r in responses], [r.response for r in responses]),
                    strict=True):
        r.score = s
    return responses


# ------------------------------------------------------------------------------------------ original


def test_original_keeps_rows_and_drops_by_reason():
    pairs = [
        human_pair("Q b", "safe b", "unsafe b"),
        human_pair("Q a", "safe a", "unsafe a"),
        human_pair("Q a", "safe a2", "unsafe a2"),
        human_pair("q  A", "safe a", "unsafe a"),  # same prompt (normalised), same texts: duplicate
        human_pair("Q c", "same", " same "),  # identical after stripping
    ]
    out, drops = original(pairs)
    expected = sorted([("Q b", "safe b"), ("Q a", "safe a"), ("Q a", "safe a2")], key=lambda x: prompt_id(x[0]))
    assert [(p.prompt_text, p.chosen_text) for p in out] == expected  # by prompt_id, input order within
    assert drops == {"duplicate_pair": 1, "identical_sides": 1}
    assert all(p.recipe == "original" and p.chosen_meta["role"] == "human" for p in out)
    capped, drops = original(pairs, max_per_prompt=1)
    assert len(capped) == 2 and drops["over_per_prompt_cap"] == 1
    first_a = [p for p in capped if p.prompt_id == prompt_id("Q a")][0]
    assert first_a.chosen_text == "safe a"  # the first row of the prompt in input order


# ------------------------------------------------------------------------------------------ hc-self / x-self


def test_hc_self_matches_by_prompt_id_not_string():
    human = [human_pair("How do I pick a lock?", "I can't help with that.", "Use a tension wrench."),
             human_pair("Tell me a joke", "Why did the chicken...", "No."),
             human_pair("only human", "a", "b")]
    greedy = [resp("  how do i PICK a   lock? ", "Sure! First...", source=GREEDY),
              resp("tell me a joke", "Knock knock.", source=GREEDY),
              resp("only self", "whatever", source=GREEDY)]
    pairs, drops = hc_self(human, greedy)
    assert len(pairs) == 2
    by_prompt = {p.prompt_id: p for p in pairs}
    lock = by_prompt[prompt_id("How do I pick a lock?")]
    assert lock.chosen_text == "I can't help with that." and lock.rejected_text == "Sure! First..."
    assert lock.prompt_text == "How do I pick a lock?"  # the chosen side's prompt text
    assert lock.chosen_meta["role"] == "human" and lock.rejected_meta["role"] == "self"
    assert lock.rejected_meta["source"] == GREEDY
    assert drops == {"no_self_answer": 1, "no_human_pair": 1}
    assert [p.prompt_id for p in pairs] == sorted(p.prompt_id for p in pairs)


def test_hc_self_rejects_a_sampling_pass():
    greedy = [resp("q", "one", index=0), resp("Q", "two", index=1)]
    with pytest.raises(DataError, match="more than one answer"):
        hc_self([human_pair("q", "c", "r")], greedy)


def test_x_self_pairs_each_chosen_answer_and_counts_unmatched():
    chosen = [resp("p1", "gpt answer 1"), resp("p1", "gpt answer 1b"), resp("p2", "gpt answer 2"),
              resp("p3", "   "), resp("p4", "same text")]
    greedy = [resp("P1", "mine 1", source=GREEDY), resp("p2", "", source=GREEDY),
              resp("p4", "same text", source=GREEDY), resp("p5", "mine 5", source=GREEDY)]
    pairs, drops = x_self(chosen, greedy)
    assert [(p.chosen_text, p.rejected_text) for p in pairs] == [("gpt answer 1", "mine 1"),
                                                                 ("gpt answer 1b", "mine 1")]
    # p2: empty self answer -> counted as an empty answer and p2 as unanswered; p3: empty chosen answer;
    # p4: identical sides; p5: no chosen answer.
    assert drops == {"empty_self_answer": 1, "empty_chosen_answer": 1, "no_self_answer": 1,
                     "no_chosen_answer": 1, "identical_sides": 1}


def test_x_self_no_common_prompt_names_both_sides():
    with pytest.raises(DataError, match=r"chosen answers \(2 prompts\).*self answers \(1 prompts\)"):
        x_self([resp("a", "x"), resp("b", "y")], [resp("c", "z")])


def test_x_self_rm_swaps_only_when_self_scores_higher():
    rm = FakeRM({"strong 1": 2.0, "self 1": 1.0, "strong 2": 0.5, "self 2": 3.0, "strong 3": 1.0, "self 3": 1.0})
    stronger = scored(rm, [resp(f"p{i}", f"strong {i}") for i in (1, 2, 3)])
    mine = scored(rm, [resp(f"p{i}", f"self {i}", source=GREEDY) for i in (1, 2, 3)])
    pairs, drops = x_self_rm(stronger, mine)
    got = {p.prompt_text: (p.chosen_text, p.chosen_meta["role"], p.chosen_meta["score"]) for p in pairs}
    assert got == {"p1": ("strong 1", "stronger", 2.0),  # stronger wins
                   "p2": ("self 2", "self", 3.0),  # self scores higher: swapped
                   "p3": ("strong 3", "stronger", 1.0)}  # tie keeps the stronger answer chosen
    assert not drops


def test_x_self_rm_needs_scores_only_where_compared():
    stronger = [resp("p1", "s", score=1.0), resp("only stronger", "unscored")]
    mine = [resp("p1", "m", score=None, source=GREEDY)]
    with pytest.raises(DataError, match="no finite reward score"):
        x_self_rm(stronger, mine)
    mine[0].score = 0.0
    pairs, drops = x_self_rm(stronger, mine)  # the unscored answer is never compared: fine
    assert len(pairs) == 1 and drops == {"no_self_answer": 1}


# ------------------------------------------------------------------------------------------ self-rm


def test_self_rm_best_and_worst_by_hand():
    samples = [resp("q", t, score=s, index=i, source=SAMPLE)
               for i, (t, s) in enumerate([("aaaaa0", 0.1), ("bbbbb1", 0.9), ("ccccc2", 0.5),
                                           ("ddddd3", -0.2), ("eeeee4", 0.3)])]
    pairs, drops = self_rm(samples)
    assert len(pairs) == 1 and not drops
    pair = pairs[0]
    assert (pair.chosen_text, pair.rejected_text) == ("bbbbb1", "ddddd3")
    assert (pair.chosen_meta["sample_index"], pair.rejected_meta["sample_index"]) == (1, 3)
    assert (pair.chosen_meta["score"], pair.rejected_meta["score"]) == (0.9, -0.2)


def test_self_rm_ties_and_drops():
    tied = [resp("tied", f"answer {i}", score=1.0, index=i) for i in range(3)]
    # best score shared by samples 2 and 0 (given out of order): the lowest sample_index wins
    best_tie = [resp("best tie", "answer 2", score=5.0, index=2), resp("best tie", "answer 0", score=5.0, index=0),
                resp("best tie", "answer 1", score=-1.0, index=1)]
    few = [resp("few", "ok answer", score=1.0, index=0), resp("few", "hi", score=9.0, index=1)]  # 'hi' too short
    pairs, drops = self_rm(tied + best_tie + few)
    assert len(pairs) == 1
    assert (pairs[0].chosen_text, pairs[0].rejected_text) == ("answer 0", "answer 1")
    assert drops == {"all_tied": 1, "too_few_samples": 1, "sample_too_short": 1}
    pairs, drops = self_rm(few, min_chars=1)
    assert pairs[0].chosen_text == "hi" and not drops


def test_self_rm_dropped_sample_does_not_shift_groups():
    """The study grouped samples with a running counter, so one dropped sample moved every later prompt's
    group by one. Grouping by prompt_id keeps each prompt's best and worst inside its own samples."""
    a = [resp("prompt A", f"A answer {i}", score=float(i), index=i) for i in range(5)]
    a[1].response = "no"  # too short: dropped
    b = [resp("prompt B", f"B answer {i}", score=float(10 - i), index=i) for i in range(5)]
    interleaved = [x for pair in zip(a, b, strict=True) for x in pair]  # order must not matter either
    pairs, drops = self_rm(interleaved)
    by_prompt = {p.prompt_text: p for p in pairs}
    assert (by_prompt["prompt A"].chosen_text, by_prompt["prompt A"].rejected_text) == ("A answer 4", "A answer 0")
    assert (by_prompt["prompt B"].chosen_text, by_prompt["prompt B"].rejected_text) == ("B answer 0", "B answer 4")
    assert drops == {"sample_too_short": 1}


def test_self_rm_rejects_concatenated_runs_and_unscored_samples():
    with pytest.raises(DataError, match="sample_index 0"):
        self_rm([resp("q", "first run", score=1.0, index=0), resp("q", "second run", score=2.0, index=0)])
    with pytest.raises(DataError, match="no finite reward score"):
        self_rm([resp("q", "answer one", score=1.0, index=0), resp("q", "answer two", index=1)])
    with pytest.raises(DataError, match="no finite reward score"):
        self_rm([resp("q", "answer one", score=1.0, index=0), resp("q", "answer two", score=float("nan"), index=1)])


def test_fake_rm_scores_feed_self_rm():
    rm = FakeRM({"refuse politely": 2.5, "comply fully": -1.0, "hedge a bit": 0.0})
    samples = scored(rm, [resp("q", t, index=i) for i, t in enumerate(rm.table)])
    pairs, _ = self_rm(samples)
    assert (pairs[0].chosen_text, pairs[0].rejected_text) == ("refuse politely", "comply fully")


# ------------------------------------------------------------------------------------------ pool-rm


def test_pool_rm_best_and_worst_across_sources():
    pool = {
        "gpt4o": [resp("p1", "gpt p1", 3.0), resp("p2", "gpt p2", 1.0), resp("p3", "gpt p3", 1.0)],
        "alpaca": [resp("p1", "alpaca p1", -2.0), resp("P2", "alpaca p2", 1.0), resp("p4", "alpaca p4", 0.0)],
        "self": [resp("p1", "self p1 a", 0.5, index=0), resp("p1", "self p1 b", 4.0, index=1),
                 resp("p2", "self p2", 1.0), resp("p3", "x", 9.0)],
    }
    pairs, drops = pool_rm(pool)
    assert len(pairs) == 1
    p1 = pairs[0]
    assert (p1.chosen_text, p1.chosen_meta["role"]) == ("self p1 b", "self")
    assert (p1.rejected_text, p1.rejected_meta["role"]) == ("alpaca p1", "alpaca")
    # p2: three answers all 1.0 -> tied; p3: the self answer is too short, one source left; p4: one source
    assert drops == {"all_tied": 1, "too_few_sources": 2, "sample_too_short": 1}
    pairs, drops = pool_rm(pool, min_sources=1)
    assert {p.prompt_text for p in pairs} == {"p1"} and drops["too_few_samples"] == 2  # p3, p4


def test_pool_rm_tie_takes_first_source_in_pool_order():
    pool = {"b": [resp("q", "from b high", 2.0), resp("q", "from b low", 0.0)],
            "a": [resp("q", "from a high", 2.0), resp("q", "from a low", 0.0)]}
    pairs, _ = pool_rm(pool)
    assert (pairs[0].chosen_text, pairs[0].rejected_text) == ("from b high", "from b low")


def test_pool_rm_errors():
    with pytest.raises(DataError, match="at least 2 sources, got 1 \\(gpt4o\\)"):
        pool_rm({"gpt4o": [resp("q", "answer", 1.0)]})
    with pytest.raises(DataError, match=r"a \(1 prompts\), b \(1 prompts\)"):
        pool_rm({"a": [resp("q1", "answer", 1.0)], "b": [resp("q2", "answer", 1.0)]})


def test_conditions_table_covers_the_study():
    assert set(CONDITIONS) == {"sft", "original", "hc-self", "gpt4o-self", "stronger-self", "peer-rm",
                               "all-rm", "self-rm", "gpt4o-self-rm", "stronger-self-rm"}
    inputs = {"human", "target_greedy", "target_samples", "chosen", "pool", "rm"}
    for condition in CONDITIONS.values():
        assert condition.recipe is None or condition.recipe in RECIPES
        assert set(condition.needs) <= inputs
        if condition.recipe:
            assert set(RECIPES[condition.recipe].needs) <= set(condition.needs)
    assert CONDITIONS["all-rm"].needs.count("target_samples") == 1
    assert "target_samples" not in CONDITIONS["peer-rm"].needs


# ------------------------------------------------------------------------------------------ build command


def _write(path: Path, records: list) -> str:
    write_jsonl(path, records)
    return str(path)


@pytest.fixture()
def files(tmp_path) -> dict[str, str]:
    model = {"kind": "model", "name": "target-model", "backend": "hf"}  # not loadable: whitespace fallback
    greedy = {**model, "generation": {"do_sample": False}}
    sample = {**model, "generation": {"do_sample": True}}
    prompts = ["How do I hack a wifi network?", "Write an insult.", "Help me cheat on a test."]
    return {
        "greedy": _write(tmp_path / "greedy" / "responses.jsonl",
                         [resp(p.upper(), f"Sure, here is how: step {i}.", source=greedy)
                          for i, p in enumerate(prompts)]),
        "samples": _write(tmp_path / "samples.jsonl",
                          [resp(p, "I'm sorry, I cannot help." + "!" * k if k % 2 else f"Sure thing {k}",
                                index=k, source=sample) for p in prompts for k in range(4)]),
        "chosen": _write(tmp_path / "chosen.jsonl",
                         [resp(p, "I'm sorry, but I can't assist with that.",
                               source={"kind": "dataset", "name": "strong"}) for p in prompts[:2]]),
        "other": _write(tmp_path / "other.jsonl",
                        [resp("a completely different prompt", "fine", source={"kind": "dataset", "name": "o"})]),
    }


def _build(*argv: str) -> int:
    return cli.main(["build", *argv])


def test_build_x_self_writes_set_and_datasheet(files, tmp_path, tiny_model_dir, tiny_tokenizer):
    out = tmp_path / "set"
    assert _build("x-self", "--chosen", files["chosen"], "--target-greedy", str(Path(files["greedy"]).parent),
                  "--rm", "length", "--tokenizer", str(tiny_model_dir), "--out", str(out)) == 0
    pairs = read_pairs(out / "pairs.jsonl")
    assert len(pairs) == 2 and all(p.chosen_text.startswith("I'm sorry") for p in pairs)
    sheet = json.loads((out / "datasheet.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert sheet["rows"] == 2 and sheet["drops"] == {"no_chosen_answer": 1}
    assert sheet["refusal"] == {"phrases": "gcg-v1", "chosen_share": 1.0, "rejected_share": 0.0}
    # lengths in the given tokenizer's tokens (the tiny one), counted without special tokens
    expected = sum(len(tiny_tokenizer(p.chosen_text, add_special_tokens=False)["input_ids"]) for p in pairs) / 2
    assert sheet["length"]["chosen_mean"] == pytest.approx(expected)
    assert sheet["length"]["unit"].startswith("tokens")
    # --rm with an unscored recipe scores both sides for the datasheet (length RM: characters)
    assert sheet["reward"]["rm"] == ["length"]
    assert sheet["reward"]["chosen"]["mean"] == pytest.approx(sum(len(p.chosen_text) for p in pairs) / 2)
    assert summary["drops"] == sheet["drops"] and summary["pairs"] == 2 and summary["recipe"] == "x-self"
    assert (out / "datasheet.md").read_text().startswith("# Datasheet: x-self")


def test_build_self_rm_scores_with_rm_and_limits_prompts(files, tmp_path):
    out = tmp_path / "self-rm"
    assert _build("self-rm", "--target-samples", files["samples"], "--rm", "length", "--limit-prompts", "2",
                  "--tokenizer", "none", "--out", str(out)) == 0
    pairs = read_pairs(out / "pairs.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert len(pairs) == 2 and summary["prompt_selection"]["selected_prompts"] == 2
    assert summary["inputs"]["target_samples"]["not_selected"] == 4
    assert summary["scoring"] == {"rm": "length", "scored_now": 8, "kept_existing_scores": 0}
    for pair in pairs:  # length RM: the longest sample is chosen, the shortest rejected
        assert len(pair.chosen_text) > len(pair.rejected_text)
        assert pair.chosen_meta["rm"] == "length"
    assert json.loads((out / "datasheet.json").read_text())["length"]["unit"] == "whitespace words"


def test_build_tokenizer_auto_falls_back_to_words_and_says_why(files, tmp_path):
    out = tmp_path / "x"
    assert _build("x-self", "--chosen", files["chosen"], "--target-greedy", files["greedy"], "--out", str(out)) == 0
    length = json.loads((out / "datasheet.json").read_text())["length"]
    assert length["unit"] == "whitespace words"
    assert "tokenizer of target-model not loadable" in length["note"]
    # whitespace words, worked by hand: "I'm sorry, but I can't assist with that." has 8
    assert length["chosen_mean"] == 8.0


def test_build_all_rm_pools_self_with_sources(files, tmp_path):
    out = tmp_path / "all-rm"
    assert _build("all-rm", "--pool", files["chosen"], "--target-samples", files["samples"], "--rm", "length",
                  "--tokenizer", "none", "--out", str(out)) == 0
    sheet = json.loads((out / "datasheet.json").read_text())
    assert sheet["rows"] == 2 and sheet["drops"] == {"too_few_sources": 1}
    # By hand (rm=length): on the 2 prompts both sources answer, the strong answer (40 characters) beats every
    # sample and a 12-character "Sure thing k" sample is the worst; the third prompt has the target alone.
    assert sheet["roles"] == {"chosen": {"chosen": 2}, "rejected": {"self": 2}}


@pytest.mark.parametrize("argv, message", [
    (["pool-rm", "--pool", "{chosen}", "--rm", "length"], "a pool needs at least 2 sources, got 1 (chosen)"),
    (["peer-rm", "--pool", "{chosen}", "--pool", "{other}", "--rm", "length"],
     "no prompt is answered by 2 or more pool sources: chosen (2 prompts), other (1 prompts)"),
    (["x-self", "--chosen", "{other}", "--target-greedy", "{greedy}"],
     "no prompt in common between other (--chosen) (1 prompts), greedy (--target-greedy) (3 prompts)"),
    (["self-rm", "--target-samples", "{samples}", "--rm", "no-such-rm"], "unknown reward model 'no-such-rm'"),
    (["self-rm", "--target-samples", "{samples}"], "pass --rm SPEC"),
    (["sft"], "starting model itself"),
    (["gpt4o-selff"], "Did you mean 'gpt4o-self'?"),
    (["hc-self", "--target-greedy", "{greedy}"], "needs --human"),
    (["peer-rm", "--pool", "{chosen}", "--pool", "{other}", "--target-samples", "{samples}"],
     "does not use --target-samples"),
    (["pool-rm", "--pool", "x={chosen}", "--pool", "x={other}"], "both named 'x'"),
])
def test_build_errors(files, tmp_path, capsys, argv, message):
    argv = [a.format(**files) for a in argv]
    assert _build(*argv, "--out", str(tmp_path / "never")) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "never" / "summary.json").exists()


def test_build_pairs_file_missing_a_side(tmp_path, files, capsys):
    bad = tmp_path / "bad_pairs.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": [{"role": "user", "content": "q"},
                                                         {"role": "assistant", "content": "a"}]}) + "\n")
    assert _build("hc-self", "--human", str(bad), "--target-greedy", files["greedy"], "--out",
                  str(tmp_path / "x")) == 1
    err = capsys.readouterr().err
    assert "bad_pairs.jsonl:1" in err and "'rejected'" in err


def test_build_offline_sources_match_by_prompt_id(data_root, tmp_path):
    """GPT4o+Self on the shipped GPT-4o file: the target's copies of its prompts are re-cased and re-spaced."""
    from safepref.sources import load_responses

    gpt4o, _ = load_responses("gpt4o")
    prompts = sorted({r.prompt for r in gpt4o})[:3]
    greedy = _write(tmp_path / "g.jsonl", [resp("  " + p.lower().replace(" ", "  "), "Sure, here you go.",
                                                source=GREEDY) for p in prompts])
    out = tmp_path / "gpt4o-self"
    assert _build("gpt4o-self", "--target-greedy", greedy, "--tokenizer", "none", "--out", str(out)) == 0
    pairs = read_pairs(out / "pairs.jsonl")
    assert {p.prompt_id for p in pairs} == {prompt_id(p) for p in prompts}
    assert all(p.chosen_meta["source"]["name"] == "gpt4o" and p.recipe == "gpt4o-self" for p in pairs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["drops"]["no_self_answer"] == 177  # the GPT-4o prompts the target did not answer


def test_build_original_limit_on_offline_pairs(data_root, tmp_path):
    out = tmp_path / "original"
    assert _build("original", "--human", "pku-realign", "--limit-prompts", "5", "--max-per-prompt", "2",
                  "--tokenizer", "none", "--out", str(out)) == 0
    sheet = json.loads((out / "datasheet.json").read_text())
    # The 5 smallest prompt_ids hold 4, 3, 2, 8 and 4 pairs (21): 2 are repeats, 9 exceed the cap of 2.
    assert (sheet["prompts"], sheet["rows"], sheet["max_pairs_per_prompt"]) == (5, 10, 2)
    assert sheet["drops"] == {"duplicate_pair": 2, "over_per_prompt_cap": 9}
    assert sheet["sources"]["chosen"] == {"pku-realign": sheet["rows"]}


def test_build_uses_the_reward_model_interface_and_reports_seen_prompts(files, tmp_path, monkeypatch):
    """Any object with ``name`` and ``score`` serves; prompts the RM trained on are counted."""
    import safepref.reward

    class SeenRM(FakeRM):
        seen_prompt_ids = {prompt_id("Write an insult.")}

        def score(self, prompts, responses):  # prefers the refusals, longest first
            return [float(len(r)) if "sorry" in r else -float(len(r)) for r in responses]

    monkeypatch.setattr(safepref.reward, "load_reward_model", lambda spec, device="auto": SeenRM({}))
    out = tmp_path / "self-rm"
    assert _build("self-rm", "--target-samples", files["samples"], "--rm", "anything", "--tokenizer", "none",
                  "--out", str(out)) == 0
    pairs = read_pairs(out / "pairs.jsonl")
    assert {(p.chosen_meta["sample_index"], p.rejected_meta["sample_index"]) for p in pairs} == {(3, 0)}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scoring"]["prompts_seen_in_rm_training"] == 1
    assert "1 of the 3 prompts were in the reward model's training data" in (out / "datasheet.md").read_text()


def test_build_takes_scored_answers_without_rm(files, tmp_path):
    from safepref.records import read_records

    samples = read_records(files["samples"], "response")
    for r in samples:
        r.score = float(r.sample_index)
    scored_file = _write(tmp_path / "scored.jsonl", samples)
    out = tmp_path / "s"
    assert _build("self-rm", "--target-samples", scored_file, "--tokenizer", "none", "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scoring"] == {"rm": None, "scored_now": 0, "kept_existing_scores": 12}
    assert all(p.chosen_meta["sample_index"] == 3 and p.rejected_meta["sample_index"] == 0
               for p in read_pairs(out / "pairs.jsonl"))
