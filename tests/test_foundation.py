"""Records, configs, sources, models and the resumable generation runner."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from safepref import config as cfg
from safepref.cli import main
from safepref.errors import ConfigError, DataError, ModelError, SafeprefError
from safepref.generate import GenerationConfig, generation_config, make_backend, run_generation
from safepref.records import (
    PreferencePair,
    Prompt,
    Response,
    pairs_to_dataset,
    prompt_id,
    read_pairs,
    read_records,
    write_jsonl,
)
from safepref.sources import load_pairs, load_prompts, load_responses, parse_spec, split_by_prompt

# ------------------------------------------------------------------------------------------------ records


def test_prompt_id_normalizes_case_and_whitespace():
    assert prompt_id("How do I  bake bread?\n") == prompt_id("how do i bake bread?")
    assert prompt_id("How do I bake bread?") != prompt_id("How do I bake a bread?")
    assert len(prompt_id("x")) == 16


def test_pair_roundtrip_and_dataset(tmp_path):
    chosen = Response(prompt="Q?", response="safe answer", source={"kind": "dataset", "name": "a"}, score=2.0)
    rejected = Response(prompt="q? ", response="unsafe", source={"kind": "model", "name": "m"}, score=-1.0)
    pair = PreferencePair.from_responses(chosen, rejected, recipe="test")
    assert pair.chosen_meta["score"] == 2.0 and pair.rejected_meta["source"]["name"] == "m"
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [pair])
    (loaded,) = read_pairs(path)
    assert loaded == pair
    dataset = pairs_to_dataset([pair])
    assert dataset.column_names == ["prompt", "chosen", "rejected"]
    assert dataset[0]["chosen"] == [{"role": "assistant", "content": "safe answer"}]


def test_read_pairs_errors_name_file_and_line(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    good = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}
    bad_json.write_text(json.dumps(good) + "\nnot json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        read_pairs(bad_json)
    missing_side = tmp_path / "missing.jsonl"
    row = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}]}
    missing_side.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"missing.jsonl:1: pair record lacks field\(s\) rejected"):
        read_pairs(missing_side)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no preference pairs"):
        read_pairs(empty)


def test_write_jsonl_is_atomic(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"a": 1}])

    def broken():
        yield {"a": 2}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert path.read_text() == '{"a": 1}\n'  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's owner-only mode


# ------------------------------------------------------------------------------------------------- config


@dataclass
class _Inner:
    rate: float = cfg.field(0.1, help="a rate")

    def __post_init__(self):
        cfg.require(0 < self.rate < 1, "inner.rate", "must be in (0, 1)")


@dataclass
class _Outer:
    name: str = cfg.field("x", help="a name")
    steps: int = cfg.field(3, help="steps")
    inner: _Inner = cfg.field(default_factory=_Inner, help="nested")


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run1\ninner:\n  rate: 0.2\n")
    config = cfg.load_config(_Outer, path, ["steps=7", "inner.rate=0.5"])
    assert (config.name, config.steps, config.inner.rate) == ("run1", 7, 0.5)
    assert cfg.config_hash(config) != cfg.config_hash(cfg.load_config(_Outer, path))


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config field 'stepz' \(did you mean 'steps'\?\)"):
        cfg.load_config(_Outer, overrides=["stepz=3"])
    with pytest.raises(ConfigError, match="'steps' must be an integer"):
        cfg.load_config(_Outer, overrides=["steps=many"])
    with pytest.raises(ConfigError, match=r"'inner.rate': must be in \(0, 1\)"):
        cfg.load_config(_Outer, overrides=["inner.rate=3"])


def test_generation_presets_and_validation():
    sample = generation_config("paper-sample")
    assert (sample.temperature, sample.top_p, sample.repetition_penalty, sample.no_repeat_ngram_size,
            sample.max_new_tokens, sample.num_samples, sample.min_chars) == (0.5, 0.9, 1.2, 3, 128, 5, 5)
    greedy = generation_config("paper-greedy", overrides=["max_new_tokens=16"])
    assert not greedy.do_sample and greedy.max_new_tokens == 16
    with pytest.raises(ConfigError, match="unknown preset 'paper-sampel'. Did you mean 'paper-sample'"):
        generation_config("paper-sampel")
    with pytest.raises(ConfigError, match="'num_samples': greedy decoding gives one answer"):
        generation_config("paper-greedy", overrides=["num_samples=3"])


# ------------------------------------------------------------------------------------------------ sources


def test_named_sources_offline(data_root):
    prompts, report = load_prompts("advbench:100")
    assert len(prompts) == 100 and prompts[0].text.startswith("Write a script that can exploit")
    safe, report = load_prompts("xstest-safe")
    assert len(safe) == 250 and report.dropped["other_subset"] == 200
    pairs, _ = load_pairs("pku-paper")
    assert len(pairs) == 500 and pairs[0].chosen_text.startswith("The dangers of robbing people")
    paper_prompts, report = load_prompts("pku-paper")
    assert len(paper_prompts) == 391 and report.dropped["duplicate_prompt"] == 109
    realign, _ = load_pairs("pku-realign:10")
    assert len(realign) == 10 and realign[0].chosen_meta["source"]["name"] == "pku-realign"
    gpt4o, _ = load_responses("gpt4o")
    assert len(gpt4o) == 201 and gpt4o[0].source["model"] == "gpt-4o"
    hh, report = load_pairs("hh-harmless")
    assert report.rows == 2312 and report.kept + sum(report.dropped.values()) == 2312  # nothing silent
    assert hh[0].prompt[0]["role"] == "user"


def test_pku_hub_format_from_local_file(tmp_path):
    rows = [
        {"prompt": "How to pick a lock?", "response_0": "Here is how", "response_1": "I can't help",
         "safer_response_id": 1, "is_response_0_safe": False, "is_response_1_safe": True},
        {"prompt": "Be nice?", "response_0": "Yes", "response_1": "No", "safer_response_id": 0},
    ]
    path = tmp_path / "pku.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, _ = load_pairs(f"pku-saferlhf={path}")
    assert [p.chosen_text for p in pairs] == ["I can't help", "Yes"]
    rows[1]["safer_response_id"] = 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"pku.jsonl:2: field 'safer_response_id' must be 0 or 1"):
        load_pairs(f"pku-saferlhf={path}")


def test_plain_files_with_named_columns(tmp_path):
    csv_path = tmp_path / "qs.csv"
    csv_path.write_text("id,question\n1,What is 2+2?\n2,Name a colour\n")
    prompts, _ = load_prompts(str(csv_path), {"prompt": "question"})
    assert [p.text for p in prompts] == ["What is 2+2?", "Name a colour"]
    with pytest.raises(DataError, match=r"qs.csv:2: missing field 'prompt'"):
        load_prompts(str(csv_path))
    empty = tmp_path / "empty.csv"
    empty.write_text("prompt\n")
    with pytest.raises(DataError, match="has no prompts"):
        load_prompts(str(empty))


def test_source_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown source 'advbenh'. Did you mean 'advbench'"):
        parse_spec("advbenh")
    monkeypatch.delenv("SAFEPREF_DATA", raising=False)
    with pytest.raises(DataError, match=r"\$SAFEPREF_DATA is not set"):
        load_prompts("advbench")
    monkeypatch.setenv("SAFEPREF_DATA", str(tmp_path))
    with pytest.raises(DataError, match="data file not found: .*harmful_behaviors.csv"):
        load_prompts("advbench")


def test_split_by_prompt_keeps_each_prompt_in_one_split():
    records = [Prompt(text=f"prompt {i % 40}", source="t") for i in range(200)]  # each prompt 5 times
    splits = split_by_prompt(records, {"train": 0.8, "test": 0.2}, seed=1)
    train_ids = {r.prompt_id for r in splits["train"]}
    test_ids = {r.prompt_id for r in splits["test"]}
    assert not train_ids & test_ids and len(train_ids | test_ids) == 40
    assert 0 < len(test_ids) < 40
    assert split_by_prompt(records, {"train": 0.8, "test": 0.2}, seed=1) == splits  # deterministic


# ------------------------------------------------------------------------------------------------- models


def test_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        make_backend("hf", str(tmp_path / "nope" / "model"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="holds no \\*.safetensors weights"):
        make_backend("hf", str(tmp_path))
    with pytest.raises(ModelError, match="unknown model 'smollm'"):
        make_backend("hf", "smollm")
    with pytest.raises(ConfigError, match="unknown generation backend 'hff'. Did you mean 'hf'"):
        make_backend("hff", "x")


def test_embedded_gguf_can_come_from_an_environment_variable(tmp_path, monkeypatch):
    from safepref.models import embedded_gguf

    monkeypatch.setenv("SAFEPREF_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="SAFEPREF_SMOLLM2_GGUF=.*missing.gguf is not a file"):
        embedded_gguf("smollm2-135m-instruct")
    gguf = tmp_path / "SmolLM2.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("SAFEPREF_SMOLLM2_GGUF", str(gguf))
    assert embedded_gguf("smollm2-135m-instruct") == gguf


# --------------------------------------------------------------------------------------------- generation


def _prompts(n: int) -> list[Prompt]:
    return [Prompt(text=f"Tell me about item number {i}" + " please" * (i % 3), source="test") for i in range(n)]


def test_hf_generation_writes_provenance_and_is_seeded(tiny_model_dir, tmp_path):
    backend = make_backend("hf", str(tiny_model_dir), device="cpu")
    config = GenerationConfig(max_new_tokens=6, num_samples=3, batch_size=2, shard_size=4, seed=7)
    summary = run_generation(_prompts(5), backend, config, tmp_path / "a", progress=False)
    assert summary["prompts"] == 5 and summary["responses"] + sum(summary["dropped"].values()) == 15
    rows = read_records(tmp_path / "a" / "responses.jsonl", "response")
    assert {r.sample_index for r in rows} <= {0, 1, 2}
    assert rows[0].source["backend"] == "hf" and rows[0].source["generation"]["temperature"] == 0.5
    again = run_generation(_prompts(5), backend, config, tmp_path / "b", progress=False)
    assert again["responses"] == summary["responses"]
    texts_b = [r.response for r in read_records(tmp_path / "b" / "responses.jsonl", "response")]
    assert [r.response for r in rows] == texts_b  # same seed, same answers


def test_generation_resumes_without_redoing_finished_shards(tiny_model_dir, tmp_path):
    backend = make_backend("hf", str(tiny_model_dir), device="cpu")
    config = GenerationConfig(do_sample=False, max_new_tokens=5, batch_size=2, shard_size=2)
    prompts = _prompts(6)
    full = run_generation(prompts, backend, config, tmp_path / "full", progress=False)

    calls = []
    real_generate = backend.generate

    def crash_on_second_shard(batch, cfg_):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user kills the run after one shard
        return real_generate(batch, cfg_)

    backend.generate = crash_on_second_shard
    with pytest.raises(KeyboardInterrupt):
        run_generation(prompts, backend, config, tmp_path / "part", progress=False)
    done = list((tmp_path / "part" / "shards").glob("*.done.json"))
    assert len(done) == 1
    for shard in (tmp_path / "part" / "shards").glob("*.jsonl"):  # what is on disk is valid JSONL
        read_records(shard, "response")

    calls.clear()
    backend.generate = lambda batch, cfg_: (calls.append(len(batch)), real_generate(batch, cfg_))[1]
    resumed = run_generation(prompts, backend, config, tmp_path / "part", progress=False)
    assert resumed["prompts_resumed"] == 2 and sum(calls) == 4  # only the unfinished prompts
    key = lambda r: (r.prompt_id, r.sample_index)  # noqa: E731
    a = sorted(read_records(tmp_path / "full" / "responses.jsonl", "response"), key=key)
    b = sorted(read_records(tmp_path / "part" / "responses.jsonl", "response"), key=key)
    assert [r.response for r in a] == [r.response for r in b]
    assert full["responses"] == resumed["responses"]


def test_generation_refuses_a_different_run_in_the_same_folder(tiny_model_dir, tmp_path):
    backend = make_backend("hf", str(tiny_model_dir), device="cpu")
    run_generation(_prompts(2), backend, GenerationConfig(max_new_tokens=3), tmp_path, progress=False)
    with pytest.raises(SafeprefError, match="holds a generation run with other settings"):
        run_generation(_prompts(2), backend, GenerationConfig(max_new_tokens=4), tmp_path, progress=False)
    summary = run_generation(_prompts(2), backend, GenerationConfig(max_new_tokens=4), tmp_path,
                             overwrite=True, progress=False)
    assert summary["prompts_resumed"] == 0


def test_min_chars_drops_are_counted(tiny_model_dir, tmp_path):
    backend = make_backend("hf", str(tiny_model_dir), device="cpu")
    config = GenerationConfig(max_new_tokens=2, num_samples=2, min_chars=1000)
    summary = run_generation(_prompts(3), backend, config, tmp_path, progress=False)
    assert summary["responses"] == 0 and summary["dropped"] == {"too_short": 6}
    assert summary["prompts_without_answer"] == 3


def test_cli_generate_end_to_end(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"q": f"question {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "out"
    code = main(["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--prompt-field", "q",
                 "--preset", "paper-greedy", "--set", "max_new_tokens=4", "--out", str(out), "--device", "cpu"])
    assert code == 0
    assert len(read_records(out / "responses.jsonl", "response")) == 3
    assert json.loads((out / "summary.json").read_text())["prompts"] == 3
    code = main(["generate", "--model", str(tmp_path / "missing"), "--prompts", str(prompts),
                 "--prompt-field", "q", "--out", str(out)])
    assert code == 1 and "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_model_generates_paper_sample(data_root, tmp_path):
    backend = make_backend("hf", "smollm2-135m-instruct", device="cpu")
    prompts, _ = load_prompts("advbench:2")
    config = generation_config("paper-sample", overrides=["max_new_tokens=24", "num_samples=2"])
    summary = run_generation(prompts, backend, config, tmp_path, progress=False)
    rows = read_records(tmp_path / "responses.jsonl", "response")
    # 2 prompts x 2 samples: each answer kept or counted as too short (min_chars 5), none lost.
    assert summary["responses"] == len(rows) and len(rows) + summary["dropped"].get("too_short", 0) == 4
    assert all(len(r.response.strip()) >= 5 for r in rows)
    assert sorted((r.prompt_id, r.sample_index) for r in rows) == sorted(
        {(r.prompt_id, r.sample_index) for r in rows})  # each (prompt, sample) once
    assert rows[0].source["name"] == "smollm2-135m-instruct"
