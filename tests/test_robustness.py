"""Robustness: a command deletes only what it wrote, broken shards are redone, bad input gives one line.

The generation tests use a fake backend (no model): what is under test is the runner's bookkeeping.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from safepref.cli import main
from safepref.errors import SafeprefError
from safepref.generate import GenerationConfig, run_generation
from safepref.records import Prompt, read_records


class EchoBackend:
    """Answers prompt ``p`` sample ``i`` with ``"answer to <p> #i"``; counts the prompts it was asked."""

    default_batch_size = 2

    def __init__(self) -> None:
        self.asked: list[str] = []

    def describe(self) -> dict:
        return {"backend": "echo", "name": "echo"}

    def generate(self, prompts: list[Prompt], config: GenerationConfig) -> list[list[str]]:
        self.asked += [p.text for p in prompts]
        return [[f"answer to {p.text} #{i}" for i in range(config.num_samples)] for p in prompts]


def _prompts(n: int) -> list[Prompt]:
    return [Prompt(text=f"prompt {i}", source="test") for i in range(n)]


CONFIG = GenerationConfig(do_sample=False, batch_size=2, shard_size=2)


# ---------------------------------------------------------------------------------------- data loss


def test_overwrite_never_deletes_a_folder_generate_did_not_write(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "notes.txt").write_text("my notes")
    for overwrite in (False, True):
        with pytest.raises(SafeprefError, match="holds no safepref generation run") as info:
            run_generation(_prompts(2), EchoBackend(), CONFIG, folder, overwrite=overwrite, progress=False)
        assert "hash None" not in str(info.value)
    assert (folder / "notes.txt").read_text() == "my notes"
    assert json.loads((folder / "config.json").read_text()) == {"model_type": "llama"}
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "notes.txt"]


def test_overwrite_of_a_generation_run_keeps_the_users_other_files(tmp_path):
    run_generation(_prompts(2), EchoBackend(), CONFIG, tmp_path, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "shards" / "README").write_text("also mine")
    other = GenerationConfig(do_sample=False, batch_size=2, shard_size=2, max_new_tokens=7)
    with pytest.raises(SafeprefError, match="holds a generation run with other settings"):
        run_generation(_prompts(2), EchoBackend(), other, tmp_path, progress=False)
    summary = run_generation(_prompts(2), EchoBackend(), other, tmp_path, overwrite=True, progress=False)
    assert summary["prompts_resumed"] == 0 and summary["responses"] == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "shards" / "README").read_text() == "also mine"


def test_generate_cli_refuses_a_foreign_folder_with_one_line(tmp_path, capsys):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    # The model does not exist: the output check must come first, before any model is loaded.
    code = main(["generate", "--model", str(tmp_path / "no-model"), "--prompts", str(prompts),
                 "--out", str(folder), "--overwrite", "--backend", "hf"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "holds no safepref generation run" in err
    assert (folder / "config.json").read_text() == "{}"


def test_generate_cli_refuses_an_existing_file_as_out_before_loading(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    code = main(["generate", "--model", str(tmp_path / "no-model"), "--prompts", str(prompts),
                 "--out", str(target), "--backend", "hf"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.endswith(f"--out {target} is a file; give a folder")
    assert target.read_text() == "x"


def _six_prompt_run(tmp_path: Path) -> Path:
    backend = EchoBackend()
    run_generation(_prompts(6), backend, CONFIG, tmp_path, progress=False)
    assert len(backend.asked) == 6
    return tmp_path / "shards"


def test_a_deleted_shard_whose_marker_stayed_is_generated_again(tmp_path, caplog):
    shard_dir = _six_prompt_run(tmp_path)
    (shard_dir / "shard-00001.jsonl").unlink()
    backend = EchoBackend()
    with caplog.at_level(logging.WARNING):
        summary = run_generation(_prompts(6), backend, CONFIG, tmp_path, progress=False)
    assert len(backend.asked) == 2 and summary["prompts_resumed"] == 4
    assert summary["shards_redone"] == ["shard-00001"] and summary["responses"] == 6
    assert "shard-00001.jsonl is redone: the shard file is missing" in caplog.text
    rows = read_records(tmp_path / "responses.jsonl", "response")
    assert sorted(r.prompt for r in rows) == [f"prompt {i}" for i in range(6)]


def test_a_truncated_shard_is_generated_again(tmp_path):
    shard_dir = _six_prompt_run(tmp_path)
    shard = shard_dir / "shard-00002.jsonl"
    text = shard.read_text()
    shard.write_text(text[: len(text) - 9])  # the last line loses its end
    backend = EchoBackend()
    summary = run_generation(_prompts(6), backend, CONFIG, tmp_path, progress=False)
    assert len(backend.asked) == 2 and summary["responses"] == 6
    rows = read_records(tmp_path / "responses.jsonl", "response")
    assert sorted(r.response for r in rows) == [f"answer to prompt {i} #0" for i in range(6)]


def test_a_shard_with_a_row_removed_and_a_corrupt_marker_are_redone(tmp_path):
    shard_dir = _six_prompt_run(tmp_path)
    shard = shard_dir / "shard-00000.jsonl"
    shard.write_text(shard.read_text().splitlines(keepends=True)[0])  # 1 of 2 rows left, still valid JSONL
    (shard_dir / "shard-00002.done.json").write_text("{not json")
    backend = EchoBackend()
    summary = run_generation(_prompts(6), backend, CONFIG, tmp_path, progress=False)
    assert len(backend.asked) == 4 and summary["responses"] == 6
    assert summary["shards_redone"] == ["shard-00000", "shard-00002"]


def test_old_markers_without_a_hash_are_checked_by_reading_the_shard(tmp_path):
    shard_dir = _six_prompt_run(tmp_path)
    for marker in shard_dir.glob("*.done.json"):  # as written before markers held rows and sha256
        info = json.loads(marker.read_text())
        marker.write_text(json.dumps({"prompt_ids": info["prompt_ids"], "dropped": info["dropped"]}))
    shard = shard_dir / "shard-00001.jsonl"
    shard.write_text(shard.read_text()[:-5])
    backend = EchoBackend()
    summary = run_generation(_prompts(6), backend, CONFIG, tmp_path, progress=False)
    assert len(backend.asked) == 2 and summary["responses"] == 6


# ------------------------------------------------------------------------------------------ secrets


def test_urls_lose_user_info_and_secret_query_values():
    from safepref.redact import redact_url

    url = "http://user:sk-abcdef123456@host:8000/v1?token=t0ps3cret&model=x&api_key=k"
    assert redact_url(url) == "http://host:8000/v1?token=***&model=x&api_key=***"
    assert redact_url("https://api.openai.com/v1") == "https://api.openai.com/v1"


def test_recorded_commands_hold_no_credentials(monkeypatch):
    from safepref.evaluate.jailbreak import provenance
    from safepref.redact import command_line

    argv = ["safepref", "eval", "jailbreak", "--judge-base-url",
            "http://user:sk-live-9f8e7d6c5b4a@judge.example:8080/v1?token=abc123&x=1", "--out", "o d"]
    assert command_line(argv) == ("safepref eval jailbreak --judge-base-url "
                                  "'http://judge.example:8080/v1?token=***&x=1' --out 'o d'")
    monkeypatch.setattr("sys.argv", argv)
    recorded = provenance()["command"]
    assert "sk-live" not in recorded and "abc123" not in recorded and "user" not in recorded


def test_a_partly_echoed_key_is_masked_in_errors(monkeypatch):
    from safepref.api import ChatClient

    monkeypatch.setenv("MY_KEY", "gsk_AbCdEfGhIjKlMnOp1234")
    client = ChatClient("m", base_url="http://127.0.0.1:9/v1", api_key_env="MY_KEY")
    echoed = "Incorrect API key provided: gsk_AbCd****1234 and gsk_AbCdEfGhIjKl (see docs)"
    assert client._redact(echoed) == "Incorrect API key provided: *** and *** (see docs)"


def test_cli_errors_are_redacted(tmp_path, capsys):
    code = main(["generate", "--model", "m", "--prompts", "http://u:p4ss@h/x.jsonl?token=zz",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "p4ss" not in err and "zz" not in err


# -------------------------------------------------------------------------------- silent acceptance


@pytest.mark.parametrize("override, field_name", [
    ("temperature=inf", "temperature"), ("temperature=.inf", "temperature"), ("top_p=.nan", "top_p"),
    ("repetition_penalty=-.inf", "repetition_penalty")])
def test_generation_settings_refuse_non_finite_numbers(override, field_name):
    from safepref.errors import ConfigError
    from safepref.generate import generation_config

    with pytest.raises(ConfigError, match=f"config field '{field_name}' must be a finite number"):
        generation_config("paper-sample", overrides=[override])
    with pytest.raises(ConfigError, match="'temperature' must be a finite number"):
        GenerationConfig(temperature=float("inf"))


def test_training_settings_refuse_non_finite_beta_and_learning_rate():
    from safepref.errors import ConfigError
    from safepref.train.dpo import DPOTrainConfig, load_train_config

    with pytest.raises(ConfigError, match="config field 'beta' must be a finite number, got inf"):
        load_train_config(overrides=["beta=.inf"])
    with pytest.raises(ConfigError, match="config field 'learning_rate' must be a finite number"):
        load_train_config(overrides=["learning_rate=nan"])
    with pytest.raises(ConfigError, match="'beta' must be a finite number"):
        DPOTrainConfig(beta=float("inf"))


def test_float_options_refuse_inf_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--model", "m", "--prompts", "p", "--out", "o", "--timeout", "inf"])
    assert "must be a finite number, got 'inf'" in capsys.readouterr().err


def test_an_empty_path_after_the_equals_sign_is_refused():
    from safepref.errors import DataError
    from safepref.sources import load_prompts

    with pytest.raises(DataError, match="source 'advbench=': the path after '=' is empty"):
        load_prompts("advbench=")


# -------------------------------------------------------------------------------- one-line errors


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("name, data, message", [
    ("bad.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', r"bad.jsonl:2: not valid UTF-8"),
    ("bad.csv", b"prompt\ncaf\xe9\n", r"bad.csv: not valid UTF-8 text"),
    ("fake.parquet", b"this is no parquet", r"fake.parquet: not a readable parquet file"),
    ("fake.jsonl.gz", b"this is no gzip", r"fake.jsonl.gz: not a valid gzip file"),
    ("deep.jsonl", b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", r"deep.jsonl:1: JSON nested too"),
    ("deep.json", b"[" * 100_000 + b"]" * 100_000, r"deep.json: JSON nested too deeply"),
])
def test_broken_data_files_give_one_line_naming_the_file(tmp_path, name, data, message):
    from safepref.errors import DataError
    from safepref.sources import load_prompts

    with pytest.raises(DataError, match=message):
        load_prompts(_write(tmp_path / name, data))


def test_broken_files_read_as_records_name_file_and_line(tmp_path):
    from safepref.errors import DataError

    with pytest.raises(DataError, match=r"r.jsonl:1: not valid UTF-8"):
        read_records(_write(tmp_path / "r.jsonl", b'{"prompt": "\xff"}\n'), "response")
    with pytest.raises(DataError, match=r"r2.jsonl:1: JSON nested too deeply"):
        read_records(_write(tmp_path / "r2.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n"), "response")
    numeric = '{"prompt": 12, "response": "a", "source": {}}\n'
    with pytest.raises(DataError, match=r"n.jsonl:1: field 'prompt' must be a str, got int 12"):
        read_records(_write(tmp_path / "n.jsonl", numeric.encode()), "response")
    numeric = '{"prompt": "p", "response": 3.5, "source": {}}\n'
    with pytest.raises(DataError, match=r"m.jsonl:1: field 'response' must be a str, got float"):
        read_records(_write(tmp_path / "m.jsonl", numeric.encode()), "response")
    pair = json.dumps({"prompt": "a string", "chosen": [{"role": "assistant", "content": "x"}],
                       "rejected": [{"role": "assistant", "content": "y"}]}) + "\n"
    with pytest.raises(DataError, match=r"p.jsonl:1: field 'prompt' must be a non-empty list of messages"):
        read_records(_write(tmp_path / "p.jsonl", pair.encode()), "pair")


def test_an_unreadable_file_gives_one_line(tmp_path, monkeypatch):
    import builtins

    from safepref.errors import DataError
    from safepref.sources import load_prompts

    path = tmp_path / "secret.jsonl"
    path.write_text('{"prompt": "x"}\n')
    real_open = builtins.open

    def denied(file, *args, **kwargs):  # as chmod 000 does for anyone but root
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(DataError, match=r"secret.jsonl: cannot read \(Permission denied\)"):
        load_prompts(str(path))


def test_a_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    from safepref.sources import load_prompts

    prompts, report = load_prompts(_write(tmp_path / "b.csv", b"\xef\xbb\xbfgoal,target\nDo x,Sure\n"),
                                   {"prompt": "goal"})
    assert [p.text for p in prompts] == ["Do x"] and report.kept == 1


def test_an_empty_answer_is_counted_and_skipped_not_fatal(tmp_path):
    from safepref.sources import load_responses

    rows = [{"prompt": "a", "response": "yes"}, {"prompt": "b", "response": "  "}, {"prompt": "c", "response": "no"}]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, report = load_responses(str(path))
    assert [r.response for r in records] == ["yes", "no"]
    assert report.as_dict() == {"source": str(path), "rows": 3, "kept": 2, "dropped": {"empty_response": 1}}


def test_a_yaml_alias_cycle_is_a_config_error(tmp_path):
    from safepref.errors import ConfigError
    from safepref.train.dpo import load_train_config

    path = tmp_path / "c.yaml"
    path.write_text("lora: &x {r: *x}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: lora.r: a YAML alias refers to itself"):
        load_train_config(path)


def test_audit_reads_a_plain_prompt_chosen_rejected_file_as_train_does(tmp_path):
    from safepref.audit import load_set

    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "good", "rejected": "bad"}) + "\n")
    pairs, where = load_set(str(path))
    assert where == str(path) and [(p.prompt_text, p.chosen_text, p.rejected_text) for p in pairs] == [
        ("p", "good", "bad")]


def test_models_needing_remote_code_or_pickled_adapters_give_one_line(tmp_path, tiny_model_dir):
    import shutil

    from safepref.errors import ModelError
    from safepref.models import load_model, resolve_model

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="holds no ..safetensors weights .found: adapter_config.json, "
                                         "adapter_model.bin.; pickled weights are not loaded"):
        resolve_model(str(adapter))

    remote = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="my-own-arch", auto_map={"AutoConfig": "configuration_mine.MyConfig",
                                                      "AutoModelForCausalLM": "modeling_mine.MyModel"})
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="needs its own code to load .the model.; .* pass --trust-remote-code"):
        load_model(str(remote), device="cpu")


@pytest.mark.parametrize("argv", [
    ["build", "original", "--human", "pku-realign", "--limit-prompts", "2", "--out", "{out}"],
    ["audit", "--pairs", "pku-realign:8", "--model", "none", "--out", "{out}"],
    ["generate", "--model", "no/such-model", "--prompts", "advbench:1", "--out", "{out}", "--backend", "hf"],
])
def test_an_existing_file_as_out_is_refused_before_any_work(tmp_path, capsys, argv):
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    code = main([a.replace("{out}", str(target)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.endswith(f"--out {target} is a file; give a folder") and len(err.splitlines()) == 1
    assert target.read_text() == "keep me"


def test_build_never_writes_over_files_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "pairs.jsonl").write_text("my own pairs\n")
    argv = ["build", "original", "--human", "pku-realign", "--limit-prompts", "2", "--out", str(out)]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 1 and "holds pairs.jsonl that no safepref build wrote" in err and len(err.splitlines()) == 1
    assert (out / "pairs.jsonl").read_text() == "my own pairs\n"
    # Its own output is replaced by a rerun: a build into a fresh folder, then the same build again.
    fresh = tmp_path / "set"
    assert main([*argv[:-1], str(fresh)]) == 0
    first = (fresh / "pairs.jsonl").read_text()
    assert main([*argv[:-1], str(fresh)]) == 0 and (fresh / "pairs.jsonl").read_text() == first != ""


def test_an_out_inside_a_read_only_folder_is_refused(tmp_path, capsys, monkeypatch):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    real_access = os.access  # root may write anywhere: answer as the permission bits do for anyone else
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    code = main(["build", "original", "--human", "pku-realign", "--limit-prompts", "2",
                 "--out", str(locked / "set")])
    assert code == 1 and f"{locked} is not writable" in capsys.readouterr().err


# --------------------------------------------------------------------------------- long prompts


class ShortContextBackend(EchoBackend):
    """A model of 40 positions whose prompts count one token per word."""

    context_length = 40

    def prompt_tokens(self, prompts: list[Prompt], config: GenerationConfig) -> list[int]:
        return [len(p.text.split()) for p in prompts]


def test_prompts_longer_than_the_context_are_skipped_counted_and_warned(tmp_path, caplog):
    prompts = [Prompt(text="short prompt", source="t"), Prompt(text="word " * 31, source="t"),
               Prompt(text="word " * 30, source="t")]
    backend = ShortContextBackend()
    config = GenerationConfig(do_sample=False, max_new_tokens=10)  # 40 - 10 = 30 prompt tokens fit
    with caplog.at_level(logging.WARNING):
        summary = run_generation(prompts, backend, config, tmp_path, progress=False)
    assert sorted(len(t.split()) for t in backend.asked) == [2, 30]
    assert summary["dropped"] == {"prompt_longer_than_context": 1} and summary["prompts_without_answer"] == 1
    assert "1 prompt(s) are longer than the model's context allows (30 tokens = 40 positions - " \
           "max_new_tokens 10; longest prompt 31 tokens)" in caplog.text
    again = run_generation(prompts, ShortContextBackend(), config, tmp_path, progress=False)
    assert again["prompts_resumed"] == 2 and again["dropped"] == {"prompt_longer_than_context": 1}


def test_local_backends_know_their_context(tiny_model_dir):
    from safepref.generate import make_backend

    backend = make_backend("hf", str(tiny_model_dir), device="cpu")
    assert backend.context_length == 512  # the tiny Llama's max_position_embeddings


# ---------------------------------------------------------------------------- fidelity to the study


class _SpyTokenizer:
    """Passes everything to the real tokenizer and records the add_special_tokens of each call."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.calls: list[bool] = []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs.get("add_special_tokens", True))
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_paper_presets_sample_with_top_k_50_and_add_no_bos_in_both_backends(tiny_model_dir):
    from safepref.generate import generation_config
    from safepref.generate.fast import FastBackend
    from safepref.generate.hf import HFBackend
    from safepref.models import load_model, load_tokenizer

    sample = generation_config("paper-sample", overrides=["prompt_format=raw", "max_new_tokens=2"])
    assert sample.top_k == 50 and sample.add_special_tokens is False
    model = load_model(str(tiny_model_dir), device="cpu")
    spy = _SpyTokenizer(load_tokenizer(str(tiny_model_dir)))
    hf = HFBackend("tiny", model_obj=model, tokenizer=spy)
    assert hf.generation_kwargs(sample)["top_k"] == 50
    assert hf.generation_kwargs(generation_config(overrides=["top_k=0"]))["top_k"] == 0  # off, not the default
    fast = FastBackend("tiny", model_obj=model, tokenizer=spy)
    prompts = [Prompt(text="How do I make a cake?", source="t")]
    for backend in (hf, fast):
        for preset, expected in (("paper-sample", False), ("paper-greedy", False)):
            spy.calls.clear()
            backend.generate(prompts, generation_config(preset, overrides=["prompt_format=raw",
                                                                            "max_new_tokens=2"]))
            assert spy.calls == [expected]
        spy.calls.clear()
        backend.generate(prompts, generation_config(overrides=["prompt_format=raw", "max_new_tokens=2",
                                                               "do_sample=false"]))
        assert spy.calls == [True]  # outside the paper presets a raw prompt still gets its BOS
    ids = hf.encode(prompts, sample)["input_ids"][0].tolist()
    assert ids[0] != spy.bos_token_id and ids == spy("How do I make a cake?", add_special_tokens=False)["input_ids"]


def _record_stage_commands(monkeypatch) -> list[list[str]]:
    """The argv of the `safepref` command each library call of a stage equals; nothing is run."""
    from safepref import pipeline

    calls: list[list[str]] = []
    monkeypatch.setattr(pipeline, "_library_stage", lambda function, config, argv: calls.append(argv) or {})
    return calls


def test_prompt_selection_rows_takes_the_first_rows_in_file_order(tmp_path):
    from safepref.graph import StageContext
    from safepref.pipeline import _select_prompts
    from safepref.records import iter_jsonl

    source = tmp_path / "train.jsonl"
    texts = ["zeta", "alpha", "zeta", "mid", "beta", "omega"]  # row 3 repeats row 1
    source.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    picked = {}
    for selection in ("rows", "hash"):
        out = tmp_path / selection
        out.mkdir()
        config = {"source": str(source), "limit": 4, "covered_by": {}, "selection": selection}
        summary = _select_prompts(StageContext(out, {}, config))
        picked[selection] = [row["prompt"] for _, row in iter_jsonl(out / "prompts.jsonl")]
        assert summary["prompts"] == len(picked[selection])
    assert picked["rows"] == ["zeta", "alpha", "mid"]  # the first 4 rows hold 3 distinct prompts
    from safepref.records import prompt_id

    assert picked["hash"] == sorted(dict.fromkeys(texts), key=prompt_id)[:4]


def test_paper_configs_select_the_studys_first_rows():
    from safepref.pipeline import load_experiment

    for path in sorted(Path(__file__).resolve().parents[1].glob("configs/paper/*.yaml")):
        exp = load_experiment(str(path))
        assert (exp.prompts.limit, exp.prompts.selection) == (10000, "rows"), path.name


def test_the_audit_stage_probes_with_the_trainings_prompt_format_and_length(tmp_path, monkeypatch):
    from safepref import pipeline
    from safepref.graph import StageContext

    root = Path(__file__).resolve().parents[1]
    exp = pipeline.load_experiment(str(root / "configs/paper/llama-2-7b.yaml"),
                                   ["train.set.max_length=640"])
    stage = next(s for s in pipeline.build_stages(exp, tmp_path) if s.name == "audit")
    calls = _record_stage_commands(monkeypatch)
    inputs = {name: tmp_path / name.replace("/", "-") for name in stage.deps}
    stage.run(StageContext(tmp_path / "audit", inputs, stage.config))
    argv = calls[0]
    # configs/paper/*.yaml train on raw prompts (train.set.prompt_format: raw).
    assert argv[argv.index("--prompt-format") + 1] == "raw" and argv[argv.index("--max-length") + 1] == "640"
    assert (stage.config["prompt_format"], stage.config["max_length"]) == ("raw", 640)


def _probe(rep: str, auc: float) -> dict:
    return {"representation": rep, "auc": auc, "auc_ci": [auc - 0.05, auc + 0.05], "accuracy": auc,
            "pair_accuracy": auc}


def _audit_result(aucs: dict[str, float]) -> dict:
    families = {"length": "cue", "refusal": "cue", "tfidf": "cue", "minilm": "embedding"}
    return {"name": "s", "n_pairs": 100, "margin": None,
            "cues": {"tfidf_top_words": {"chosen": ["sorry", "cannot"], "rejected": ["sure", "step"]}},
            "representations": [{"spec": s, "family": families[s], "best": _probe(s, a), "probes": [_probe(s, a)]}
                                for s, a in aucs.items()]}


def test_the_audit_verdict_does_not_deny_the_cue_that_is_its_best_probe():
    from safepref.audit.report import verdict

    text, cue, level = verdict(_audit_result({"tfidf": 0.74, "minilm": 0.73}))
    assert (cue, level) == (None, "weakly separable") and "No cheap cue explains it" not in text
    assert ("A cheap cue separates them as well as any probe: tfidf alone reaches AUC 0.74 (words that mark "
            "chosen: sorry, cannot; rejected: sure, step), below the 0.75 at which a cue is named.") in text
    text, _, _ = verdict(_audit_result({"tfidf": 0.65, "minilm": 0.74}))
    assert "No cheap cue explains it (best cue tfidf: AUC 0.65, below the best probe's 0.74)" in text


def test_a_proxy_set_is_labelled_in_its_datasheet_and_the_report(tmp_path):
    from safepref import pipeline
    from safepref.datasheet import datasheet_markdown

    for name, answers in (("a", ["a much longer answer here", "short one"]), ("b", ["medium answer", "x y"])):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"prompt": p, "response": r}) + "\n" for p, r in zip(["first", "second"], answers, strict=True)))
    out = tmp_path / "set"
    assert main(["build", "peer-rm", "--pool", f"a={tmp_path / 'a.jsonl'}", "--pool", f"b={tmp_path / 'b.jsonl'}",
                 "--rm", "length", "--tokenizer", "none", "--proxy", "no peers offline", "--out", str(out)]) == 0
    sheet = json.loads((out / "datasheet.json").read_text())
    assert sheet["proxy"] == "no peers offline" and sheet["condition"] == "peer-rm"
    markdown = (out / "datasheet.md").read_text()
    assert markdown.startswith("# Datasheet: pool-rm (peer-rm): PROXY\n\n**Proxy**: this set only stands in for "
                               "the condition: no peers offline\n")
    assert "PROXY" not in datasheet_markdown({**sheet, "proxy": None})

    root = Path(__file__).resolve().parents[1]
    exp = pipeline.load_experiment(str(root / "configs/quickstart.yaml"))
    stage = next(s for s in pipeline.build_stages(exp, tmp_path) if s.name == "build/peer-rm")
    assert stage.config["proxy"].startswith("no model of the target's size answered PKU prompts offline")
    from safepref.report import collect

    run = tmp_path / "run"
    (run / "stages" / "b").mkdir(parents=True)
    (run / "index.json").write_text(json.dumps({"build/peer-rm": "stages/b"}))
    (run / "stages" / "b" / "stage.json").write_text("{}")
    (run / "stages" / "b" / "datasheet.json").write_text(json.dumps(sheet))
    row = collect(run, ["peer-rm"])["conditions"]["peer-rm"]
    assert (row["label"], row["proxy"]) == ("Peer+RM (proxy)", "no peers offline")


def test_the_rm_swap_variants_run_through_safepref_run(tmp_path, monkeypatch):
    from safepref import pipeline
    from safepref.graph import StageContext

    root = Path(__file__).resolve().parents[1]
    exp = pipeline.load_experiment(str(root / "configs/quickstart.yaml"),
                                   ["conditions=[sft, gpt4o-self, gpt4o-self-rm, stronger-self-rm]"])
    stages = {s.name: s for s in pipeline.build_stages(exp, tmp_path)}
    stage = stages["build/stronger-self-rm"]
    assert stage.deps == sorted(["prompts", "generate/self-greedy", "rm/train"])
    calls = _record_stage_commands(monkeypatch)
    inputs = {name: tmp_path / name.replace("/", "-") for name in stage.deps}
    stage.run(StageContext(tmp_path / "b", inputs, stage.config))
    argv = calls[0]
    assert argv[:2] == ["build", "stronger-self-rm"]
    assert argv[argv.index("--chosen") + 1] == exp.answers[exp.roles.stronger].source
    assert argv[argv.index("--target-greedy") + 1] == str(tmp_path / "generate-self-greedy" / "responses.jsonl")
    assert {"train/gpt4o-self-rm", "eval/gpt4o-self-rm", "train/stronger-self-rm"} <= set(stages)
    with pytest.raises(SafeprefError, match="condition 'gpt4o-self-rm' needs GPT-4o answers"):
        pipeline.load_experiment(str(root / "configs/quickstart.yaml"),
                                 ["conditions=[gpt4o-self-rm]", "roles.gpt4o=null"])


def test_the_alpaca_template_is_the_studys_text():
    from safepref.models import ALPACA_TEMPLATE, format_prompt

    expected = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                "the request.\n\n### Instruction:\nWrite a poem.\n\n### Response:\n")
    assert ALPACA_TEMPLATE.format(instruction="Write a poem.") == expected
    assert format_prompt(None, "Write a poem.", "alpaca") == expected
    assert format_prompt(None, [{"role": "user", "content": "Write a poem."}], "alpaca") == expected


def test_each_condition_builds_on_the_generation_the_study_used(tmp_path, monkeypatch):
    """Self sides: greedy for HC/GPT4o/Stronger+Self (and the RM swaps), 5 samples for Self+RM and All+RM."""
    from safepref import pipeline
    from safepref.graph import StageContext

    root = Path(__file__).resolve().parents[1]
    exp = pipeline.load_experiment(str(root / "configs/quickstart.yaml"),
                                   [f"conditions=[{', '.join(pipeline.CONDITION_ORDER + pipeline.EXTRA_CONDITIONS)}]"])
    stages = {s.name: s for s in pipeline.build_stages(exp, tmp_path)}
    assert stages["generate/self-greedy"].config["preset"] == "paper-greedy"
    assert stages["generate/self-sample"].config["preset"] == "paper-sample"
    calls = _record_stage_commands(monkeypatch)
    received = {}
    for condition in [c for c in exp.conditions if c != "sft"]:
        stage = stages[f"build/{condition}"]
        calls.clear()
        stage.run(StageContext(tmp_path / "b", {n: tmp_path / n.replace("/", "-") for n in stage.deps},
                               stage.config))
        argv = calls[0]
        received[condition] = {flag: Path(argv[argv.index(flag) + 1]).parent.name
                               for flag in ("--target-greedy", "--target-samples") if flag in argv}
    greedy, sample = {"--target-greedy": "generate-self-greedy"}, {"--target-samples": "generate-self-sample"}
    assert received == {"hc-self": greedy, "gpt4o-self": greedy, "stronger-self": greedy, "peer-rm": {},
                        "all-rm": sample, "original": {}, "self-rm": sample,
                        "gpt4o-self-rm": greedy, "stronger-self-rm": greedy}


# ---------------------------------------------------------------------- corrupt bookkeeping files


def test_a_corrupt_stage_marker_reruns_its_stage(tmp_path):
    from safepref.graph import Stage, execute

    runs = []

    def work(ctx):
        runs.append(ctx.out_dir.name)
        return {"value": 1}

    stages = [Stage("one", work, {"x": 1})]
    execute(stages, tmp_path, log=lambda _: None)
    marker = next(tmp_path.rglob("stage.json"))
    marker.write_text('{"truncated": ')
    messages = []
    results = execute(stages, tmp_path, log=messages.append)
    assert len(runs) == 2 and results["one"]["summary"] == {"value": 1}
    assert any("stage.json:1: not valid JSON" in m and "running it again" in m for m in messages)


@pytest.mark.parametrize("name, content, message", [
    ("index.json", "[]", "index.json: expected a JSON object, got list"),
    ("index.json", "{", "index.json:1: not valid JSON"),
])
def test_report_on_corrupt_run_files_gives_one_line(tmp_path, capsys, name, content, message):
    (tmp_path / name).write_text(content)
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_train_on_a_folder_with_a_corrupt_run_json_gives_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text('{"hash": ')
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a good answer", "rejected": "a bad one"}) + "\n")
    assert main(["train", "--pairs", str(pairs), "--model", "no/such-model", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run.json:1: not valid JSON" in err


def test_a_corrupt_generation_config_is_named_and_overwrite_restarts_only_that_run(tmp_path):
    _six_prompt_run(tmp_path)
    (tmp_path / "config.json").write_text('{"hash": "abc", "gen')
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SafeprefError, match=r"config.json is not a readable generation config.*--overwrite"):
        run_generation(_prompts(6), EchoBackend(), CONFIG, tmp_path, progress=False)
    backend = EchoBackend()
    summary = run_generation(_prompts(6), backend, CONFIG, tmp_path, overwrite=True, progress=False)
    assert len(backend.asked) == 6 and summary["responses"] == 6 and (tmp_path / "notes.txt").exists()


def test_stage_settings_record_an_endpoint_without_its_credentials(tmp_path, monkeypatch):
    from safepref import pipeline
    from safepref.graph import StageContext

    root = Path(__file__).resolve().parents[1]
    url = "http://user:sk-hidden123456@127.0.0.1:8000/v1?token=abc"
    exp = pipeline.load_experiment(str(root / "configs/quickstart.yaml"), [
        "conditions=[sft, gpt4o-self]", "answers.api={model: m, backend: openai, base_url: '" + url + "'}",
        "roles.gpt4o=api"])
    stage = next(s for s in pipeline.build_stages(exp, tmp_path) if s.name == "generate/api")
    assert stage.config["base_url"] == "http://127.0.0.1:8000/v1?token=***"
    calls = _record_stage_commands(monkeypatch)
    stage.run(StageContext(tmp_path / "g", {"prompts": tmp_path / "p"}, stage.config))
    assert calls[0][calls[0].index("--base-url") + 1] == url  # the command itself still reaches the server


@pytest.mark.parametrize("kind", ["classifier", "safety", "finetuned"])
def test_train_judge_never_replaces_a_folder_it_did_not_write(tmp_path, capsys, kind):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    assert main(["eval", "train-judge", "--kind", kind, "--out", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "judge (no " in err and "never replaced" in err
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_a_judge_save_refuses_a_foreign_folder(tmp_path):
    from safepref.paths import check_replaceable

    folder = tmp_path / "f"
    folder.mkdir()
    check_replaceable(folder, "meta.json", "judge")  # empty: fine
    (folder / "meta.json").write_text("{}")
    check_replaceable(folder, "meta.json", "judge")  # an earlier save: fine
    (folder / "meta.json").unlink()
    (folder / "x").write_text("")
    with pytest.raises(SafeprefError, match="holds no judge .no meta.json.; it is never replaced"):
        check_replaceable(folder, "meta.json", "judge")


def test_json_outputs_are_strict_json(tmp_path):
    from safepref.records import write_json, write_jsonl

    write_json(tmp_path / "a.json", {"auc": float("nan"), "rows": [1.5, float("inf")], "k": (2, -float("inf"))})
    write_jsonl(tmp_path / "b.jsonl", [{"score": float("nan"), "ok": 0.25}])
    assert (tmp_path / "a.json").read_text() == ('{\n  "auc": null,\n  "rows": [\n    1.5,\n    null\n  ],\n'
                                                 '  "k": [\n    2,\n    null\n  ]\n}\n')
    assert (tmp_path / "b.jsonl").read_text() == '{"score": null, "ok": 0.25}\n'
