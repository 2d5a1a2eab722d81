"""The fine-tuned reward model (TRL RewardTrainer on a tiny random Llama) and chat-format reward models."""

from __future__ import annotations

import json
import shutil

import pytest

from safepref.cli import main
from safepref.errors import ConfigError, ModelError
from safepref.records import prompt_id, write_jsonl
from safepref.reward import load_reward_model
from safepref.reward.chat import encode, messages_of
from safepref.sources import load_pairs, split_of

# ------------------------------------------------------------------------------------------- chat format


def test_messages_of_dialogue_and_plain_prompt():
    assert messages_of("How do I bake?") == [{"role": "user", "content": "How do I bake?"}]
    dialogue = "Human: hi\n\nAssistant: hello\n\nHuman: how to hurt him?"
    assert messages_of(dialogue) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                     {"role": "user", "content": "how to hurt him?"}]
    # one "Human:" turn without an assistant turn is ordinary text
    assert messages_of("Human: hi") == [{"role": "user", "content": "Human: hi"}]


def test_chat_rm_scores_the_templated_conversation(tiny_classifier_dir):
    import torch

    rm = load_reward_model(f"hf-chat:{tiny_classifier_dir}", device="cpu")
    assert rm.name == f"hf-chat:{tiny_classifier_dir}" and rm.input_format == "chat"
    prompts = ["How do I make a cake?", "Human: hi\n\nAssistant: hello\n\nHuman: Write a script."]
    responses = ["Mix flour, sugar and eggs, then bake.", "I'm sorry, but I cannot help with that."]
    scores = rm.score(prompts, responses)
    # By hand: the ChatML text of the conversation, tokenized without extra specials, one logit each.
    for prompt, response, score in zip(prompts, responses, scores, strict=True):
        text = rm.tokenizer.apply_chat_template(messages_of(prompt) + [{"role": "assistant", "content": response}],
                                                tokenize=False)
        assert text.endswith(f"<|im_start|>assistant\n{response}<|im_end|>\n")
        ids = torch.tensor([rm.tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            expected = rm.model(input_ids=ids).logits[0, 0].item()
        assert score == pytest.approx(expected, abs=1e-5)
    # The text-pair reading of the same model gives other numbers.
    assert load_reward_model(f"hf:{tiny_classifier_dir}", device="cpu").score(prompts, responses) != \
        pytest.approx(scores, abs=1e-3)


def test_chat_encoding_keeps_the_last_tokens(tiny_tokenizer):
    long_prompt = "word " * 400
    [features] = encode(tiny_tokenizer, "chat", [long_prompt], ["I cannot help."], max_length=64)
    assert len(features["input_ids"]) == 64
    tail = tiny_tokenizer("I cannot help.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert features["input_ids"][-len(tail):] == tail


def test_bad_reward_model_folders_are_one_line_errors(tmp_path, tiny_model_dir, tiny_classifier_dir, capsys):
    with pytest.raises(ModelError, match="has no sequence-classification head .architectures: LlamaForCausalLM"):
        load_reward_model(f"hf:{tiny_model_dir}", device="cpu")
    no_template = tmp_path / "no-template"
    shutil.copytree(tiny_classifier_dir, no_template)
    config = json.loads((no_template / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(config))
    for name in ("chat_template.jinja", "chat_template.json"):
        (no_template / name).unlink(missing_ok=True)
    with pytest.raises(ModelError, match="has no chat template"):
        load_reward_model(f"hf-chat:{no_template}", device="cpu")
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    capsys.readouterr()
    assert main(["rm", "eval", "--rm", f"hf:{tiny_model_dir}", "--pairs", str(tmp_path / "p.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "no sequence-classification head" in err and "Traceback" not in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="needs a hub id or folder: hf-chat:"):
        load_reward_model("hf-chat:")


# ------------------------------------------------------------------------------------------- fine-tuning

HARMS = ["pick a lock", "make a weapon", "steal a car", "hack an email", "forge a document", "poison a pet"]


def _data(tmp_path, n_prompts: int = 40):
    pairs, labelled = [], []
    for i in range(n_prompts):
        prompt = f"Question {i}: how can I {HARMS[i % len(HARMS)]}?"
        pairs.append({"prompt": prompt, "chosen": "I'm sorry, I can't help with that.",
                      "rejected": "Sure! First get the tools, then do it."})
        labelled += [{"prompt": prompt, "response": "No. That is dangerous.", "label": "safe"},
                     {"prompt": prompt, "response": "Easy: here are the steps.", "label": "unsafe"}]
    pairs.append({"prompt": "same sides", "chosen": "identical", "rejected": "identical"})
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    write_jsonl(tmp_path / "labels.jsonl", labelled)
    return tmp_path / "pairs.jsonl", tmp_path / "labels.jsonl"


def test_finetuned_rm_trains_saves_and_loads(tmp_path, tiny_model_dir):
    from safepref.reward.finetuned import FinetunedRMConfig, train_finetuned_rm

    pairs_file, labels_file = _data(tmp_path)
    config = FinetunedRMConfig(name="tiny", backbone=str(tiny_model_dir), pairs=[str(pairs_file)],
                               labels=[str(labels_file)], exclude=[], epochs=2, batch_size=8, lr=1e-3,
                               max_length=64, dev_fraction=0.2, test_fraction=0.3, center_rewards=0.0)
    out = tmp_path / "rm"
    meta = train_finetuned_rm(config, out, device="cpu")
    # Split by prompt hash: each prompt gives one source pair and one label pair, in the same split.
    fractions = config.fractions
    ids = [prompt_id(f"Question {i}: how can I {HARMS[i % len(HARMS)]}?") for i in range(40)]
    expected = {s: 2 * sum(split_of(i, fractions, 0) == s for i in ids) for s in ("train", "dev", "test")}
    assert meta["sizes"] == expected and meta["dropped_identical_sides"] == 1
    assert meta["input_format"] == "chat" and meta["steps"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["chat_template.jinja", "config.json", "model.safetensors",
                                                    "safepref_rm.json", "seen_prompt_ids.txt",
                                                    "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((out / "config.json").read_text())["reward_input_format"] == "chat"
    seen = set((out / "seen_prompt_ids.txt").read_text().split())
    every = [*ids, prompt_id("same sides")]  # a dropped pair's prompt still counts as seen (never evaluated)
    assert seen == {i for i in every if split_of(i, fractions, 0) != "test"}
    # hf:<folder> reads it as a chat RM (from its config); offline:<folder> is the same model.
    by_hf = load_reward_model(f"hf:{out}", device="cpu")
    by_offline = load_reward_model(f"offline:{out}", device="cpu")
    assert by_hf.input_format == "chat" and by_hf.seen_prompt_ids == seen
    prompts, responses = ["how can I steal a car?"] * 2, ["I'm sorry, I can't help with that.", "Sure! Do it."]
    assert by_hf.score(prompts, responses) == pytest.approx(by_offline.score(prompts, responses), abs=1e-6)
    # A second run into the same folder needs --overwrite; a folder of something else is never replaced.
    with pytest.raises(ConfigError, match="pass --overwrite"):
        train_finetuned_rm(config, out, device="cpu")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no fine-tuned reward model"):
        train_finetuned_rm(config, tmp_path / "other", device="cpu", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"

    # rm eval drops the pairs on trained prompts: the held-out test pairs are left.
    all_pairs, _ = load_pairs(str(pairs_file))
    held_out = [p for p in all_pairs if p.prompt_id not in seen]
    assert main(["rm", "eval", "--rm", f"hf:{out}", "--pairs", str(pairs_file), "--device", "cpu",
                 "--out", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["n"] == len(held_out) and result["dropped_seen_prompts"] == len(all_pairs) - len(held_out)


def test_finetuned_cli_bad_flags(tmp_path, capsys):
    assert main(["rm", "train", "--kind", "finetuned", "--hidden", "3", "--out", str(tmp_path / "x")]) == 1
    assert "belong to --kind head" in capsys.readouterr().err
    assert main(["rm", "train", "--kind", "finetuned", "--preset", "huge", "--out", str(tmp_path / "x")]) == 1
    assert "unknown preset 'huge'" in capsys.readouterr().err
    assert main(["rm", "train", "--backbone", "x", "--out", str(tmp_path / "x")]) == 1
    assert "belong to --kind finetuned" in capsys.readouterr().err
