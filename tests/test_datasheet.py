"""Datasheet numbers worked by hand, and the refusal phrase lists."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from safepref.datasheet import (
    DATASHEET_VERSION,
    build_datasheet,
    datasheet_markdown,
    side_label,
    token_counter,
    write_datasheet,
)
from safepref.errors import ConfigError
from safepref.records import PreferencePair
from safepref.refusal import (
    GCG_V1,
    MORE_IS_LESS_V1,
    PHRASE_SETS,
    is_refusal,
    phrase_set,
    refusal_share,
)

GREEDY = {"kind": "model", "name": "smol", "generation": {"do_sample": False}}
SAMPLE = {"kind": "model", "name": "smol", "generation": {"do_sample": True}}
GPT4O = {"kind": "dataset", "name": "gpt4o", "model": "gpt-4o"}


def pair(prompt: str, chosen: str, rejected: str, chosen_source: dict, rejected_source: dict,
         chosen_score: float | None = None, rejected_score: float | None = None,
         roles: tuple[str, str] = ("chosen", "self")) -> PreferencePair:
    return PreferencePair(prompt=[{"role": "user", "content": prompt}],
                          chosen=[{"role": "assistant", "content": chosen}],
                          rejected=[{"role": "assistant", "content": rejected}],
                          chosen_meta={"source": chosen_source, "score": chosen_score, "role": roles[0], "rm": "t"},
                          rejected_meta={"source": rejected_source, "score": rejected_score, "role": roles[1],
                                         "rm": "t"},
                          recipe="x-self")


@pytest.fixture()
def pairs() -> list[PreferencePair]:
    return [
        # chosen 6 words, rejected 3 words; chosen refuses
        pair("q1", "I'm sorry, I cannot do that.", "Sure, step one.", GPT4O, GREEDY, 2.0, -1.0),
        # chosen 2 words, rejected 5 words; rejected refuses ("As an")
        pair("q2", "Here goes.", "As an AI model, no.", GPT4O, GREEDY, 0.5, 1.5),
        # same prompt again (two GPT-4o answers); chosen 4 words, rejected 3 words; no scores
        pair("Q1 ", "Ok, do this then.", "Sure, step one.", SAMPLE, GREEDY, None, None, ("self", "self")),
    ]


def test_datasheet_numbers_by_hand(pairs):
    sheet = build_datasheet(pairs, Counter({"no_self_answer": 3, "identical_sides": 1}), recipe="x-self",
                            condition="gpt4o-self")
    assert sheet["datasheet_version"] == DATASHEET_VERSION
    assert (sheet["rows"], sheet["prompts"], sheet["max_pairs_per_prompt"]) == (3, 2, 2)
    assert sheet["sources"] == {"chosen": {"gpt4o": 2, "smol (sample)": 1}, "rejected": {"smol (greedy)": 3}}
    assert sheet["roles"] == {"chosen": {"chosen": 2, "self": 1}, "rejected": {"self": 3}}
    length = sheet["length"]
    assert length["unit"] == "whitespace words"
    assert length["chosen_mean"] == pytest.approx((6 + 2 + 4) / 3)
    assert length["rejected_mean"] == pytest.approx((3 + 5 + 3) / 3)
    assert (length["chosen_median"], length["rejected_median"]) == (4.0, 3.0)
    assert length["chosen_longer_share"] == pytest.approx(2 / 3)
    assert length["chosen_mean_chars"] == pytest.approx((28 + 10 + 17) / 3)
    reward = sheet["reward"]
    assert reward["rm"] == ["t"]
    assert reward["chosen"] == {"n": 2, "mean": 1.25, "std": 0.75, "min": 0.5, "max": 2.0}
    assert reward["rejected"] == {"n": 2, "mean": 0.25, "std": 1.25, "min": -1.0, "max": 1.5}
    assert reward["chosen_higher_share"] == 0.5
    assert reward["mean_margin"] == pytest.approx(((2.0 + 1.0) + (0.5 - 1.5)) / 2)
    assert sheet["refusal"] == {"phrases": "gcg-v1", "chosen_share": pytest.approx(1 / 3),
                                "rejected_share": pytest.approx(1 / 3)}
    assert sheet["drops"] == {"identical_sides": 1, "no_self_answer": 3}  # sorted by reason


def test_datasheet_without_scores_or_pairs():
    sheet = build_datasheet([], {}, recipe="self-rm")
    assert sheet["rows"] == 0 and sheet["reward"] is None and sheet["length"]["chosen_mean"] is None
    assert sheet["refusal"]["chosen_share"] is None
    assert "No reward scores" in datasheet_markdown(sheet)


def test_datasheet_token_lengths_with_a_tokenizer(pairs, tiny_tokenizer):
    count, unit = token_counter(tiny_tokenizer, name="tiny")
    sheet = build_datasheet(pairs, recipe="x-self", count_tokens=count, length_unit=unit)
    expected = [len(tiny_tokenizer(p.chosen_text, add_special_tokens=False)["input_ids"]) for p in pairs]
    assert sheet["length"]["unit"] == "tokens (tiny)"
    assert sheet["length"]["chosen_mean"] == pytest.approx(sum(expected) / 3)
    assert all(n > 0 for n in expected)


def test_datasheet_with_the_studys_phrase_list(pairs):
    extra = pair("q3", "That is illegal.", "fine", GPT4O, GREEDY)
    gcg = build_datasheet([*pairs, extra], recipe="x-self")
    study = build_datasheet([*pairs, extra], recipe="x-self", refusal_phrases=MORE_IS_LESS_V1)
    assert gcg["refusal"]["chosen_share"] == pytest.approx(2 / 4)  # "illegal" counts in GCG's list
    assert study["refusal"]["chosen_share"] == pytest.approx(1 / 4)  # ... not in the study's copy
    assert study["refusal"]["phrases"] == "more-is-less-v1"


def test_write_datasheet_json_and_markdown(pairs, tmp_path):
    sheet = build_datasheet(pairs, {"all_tied": 2}, recipe="x-self", condition="gpt4o-self",
                            extra={"inputs": {"chosen": {"spec": "gpt4o"}}})
    json_path, md_path = write_datasheet(tmp_path / "set", sheet)
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(sheet))
    md = md_path.read_text()
    assert md.startswith("# Datasheet: x-self (gpt4o-self)")
    assert "3 pairs on 2 prompts" in md and "gpt4o (2)" in md and "smol (greedy) (3)" in md
    assert "| mean length (whitespace words) | 4.0 | 3.7 |" in md
    assert "| refusals (gcg-v1) | 33% | 33% |" in md
    assert "1.25 ± 0.75" in md and "Dropped: all_tied 2." in md


def test_side_label():
    assert side_label({"source": GREEDY}) == "smol (greedy)"
    assert side_label({"source": SAMPLE}) == "smol (sample)"
    assert side_label({"source": GPT4O}) == "gpt4o"
    assert side_label({}) == "?"


# ------------------------------------------------------------------------------------------ refusal


def test_phrase_lists_are_named_and_differ_as_documented():
    assert len(GCG_V1) == 29 and len(MORE_IS_LESS_V1) == 29
    assert set(GCG_V1) - set(MORE_IS_LESS_V1) == {"illegal"}
    (added,) = set(MORE_IS_LESS_V1) - set(GCG_V1)
    assert added.startswith("A conversation between a user and an LLM-based AI assistant.")
    assert set(PHRASE_SETS) == {"gcg-v1", "more-is-less-v1"}
    assert phrase_set("more-is-less-v1") is MORE_IS_LESS_V1


def test_is_refusal_substring_case_sensitive():
    assert is_refusal("Well... I'm sorry, no.")
    assert is_refusal("This is illegal.")  # GCG list
    assert not is_refusal("This is illegal.", MORE_IS_LESS_V1)
    assert not is_refusal("sure, sorry not sorry")  # "Sorry" is capitalised in the list
    assert is_refusal("Sure!", phrases=["Sure"])  # any list of strings works
    assert refusal_share(["I cannot", "ok", "ok", "OpenAI policy"]) == 0.5
    assert refusal_share([]) is None


def test_unknown_phrase_list_is_a_clear_error():
    with pytest.raises(ConfigError, match="Did you mean 'gcg-v1'"):
        phrase_set("gcg-v2")
