"""The ``openai`` backend and ``ChatClient`` against a real OpenAI-compatible server (llama-cpp-python's,
serving the embedded SmolLM2 GGUF), plus endpoints that refuse or never answer (real sockets).

The server tests skip only when llama-cpp-python's server (or the embedded model) is not installed.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections import Counter
from pathlib import Path

import pytest
from llama_server import LlamaServer, free_port, skip_reason

from safepref.api import ChatClient, request_key
from safepref.cli import main
from safepref.errors import BackendError, ConfigError
from safepref.generate import GenerationConfig, make_backend, run_generation
from safepref.records import Prompt, read_records

KEY_ENV = "SAFEPREF_TEST_API_KEY"
SERVER_KEY = "sk-test-" + secrets.token_hex(12)  # looks like an OpenAI key, so redaction patterns are tested too

needs_server = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

PROMPTS = ["Name a color.", "What is 2 + 2?", "Say hello in French."]


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def cache_files(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in folder.rglob("*.json")}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """One server for the module's read-only tests; it requires SERVER_KEY."""
    if skip_reason():
        pytest.skip(skip_reason())
    with LlamaServer(tmp_path_factory.mktemp("llama"), api_key=SERVER_KEY) as server:
        yield server


# ------------------------------------------------------------------------------------ against a real server


@needs_server
def test_generation_end_to_end_cached_and_rerun_without_server(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)
    prompts = [Prompt(text=t, source="test") for t in PROMPTS[:2]]
    config = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=0.8, num_samples=2, seed=7,
                              repetition_penalty=1.2)
    cache = tmp_path / "out" / "api_cache"
    server = LlamaServer(tmp_path, api_key=SERVER_KEY).start()
    try:
        backend = make_backend("openai", "smollm2", base_url=server.base_url, api_key_env=KEY_ENV,
                               concurrency=4, cache_dir=cache)
        summary = run_generation(prompts, backend, config, tmp_path / "out", progress=False)
    finally:
        server.stop()

    responses = read_records(tmp_path / "out" / "responses.jsonl", "response")
    assert summary["responses"] == len(responses) == 2 * len(prompts)
    per_prompt = Counter((r.prompt_id, r.sample_index) for r in responses)
    assert set(per_prompt.values()) == {1} and {i for _, i in per_prompt} == {0, 1}
    assert all(r.response.strip() for r in responses), "the model answered nothing"
    assert responses[0].source["backend"] == "openai" and responses[0].source["base_url"] == server.base_url
    # llama-cpp-python ignores n: each second sample is its own request with another seed. Every request
    # that was answered is one file in the cache.
    sent = backend.client.stats["requests"]
    files = cache_files(cache)
    assert len(prompts) <= sent <= 2 * len(prompts) and len(files) == sent
    entry = json.loads(next(iter(cache.rglob("*.json"))).read_text())
    assert entry["choices"] and entry["request"]["sampling"]["extra_body"]["repeat_penalty"] == 1.2
    # The key is sent (the server requires it) but written nowhere, nor printed.
    assert SERVER_KEY.encode() not in all_bytes(tmp_path / "out")
    assert SERVER_KEY not in "".join(capfd.readouterr())

    # The server is gone: a rerun answers from the cache alone, with zero requests.
    again = make_backend("openai", "smollm2", base_url=server.base_url, api_key_env=KEY_ENV, cache_dir=cache,
                         max_retries=0, timeout=2)
    answers = again.generate(prompts, config)
    assert again.client.stats["requests"] == 0 and again.client.stats["cache_hits"] >= len(prompts)
    by_sample = {(r.prompt_id, r.sample_index): r.response for r in responses}
    for prompt, samples in zip(prompts, answers, strict=True):
        assert samples == [by_sample[(prompt.prompt_id, 0)], by_sample[(prompt.prompt_id, 1)]]

    # One new prompt: the endpoint refuses connections, so a clear error comes after the 2 retries asked for,
    # and the cache is left as it was.
    again_more = make_backend("openai", "smollm2", base_url=server.base_url, api_key_env=KEY_ENV,
                              cache_dir=cache, max_retries=2, retry_base_delay=0.05, timeout=2)
    with pytest.raises(BackendError) as err:
        again_more.generate([*prompts, Prompt(text="A new question?", source="test")], config)
    assert again_more.client.stats["retries"] == 2 and again_more.client.stats["requests"] == 0
    message = str(err.value)
    assert f"127.0.0.1:{server.port}" in message and "cannot connect" in message and "3 tries" in message
    assert "rerun" in message and SERVER_KEY not in message
    assert cache_files(cache) == files


@needs_server
def test_client_judge_style_requests_dedup_and_cache(keyed_server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)
    client = ChatClient("smollm2", base_url=keyed_server.base_url, api_key_env=KEY_ENV, concurrency=3,
                        cache_dir=tmp_path / "cache", progress=False)
    system = {"role": "system", "content": "Answer with one word."}
    a = [system, {"role": "user", "content": "Is the sky blue? Yes or no."}]
    b = [system, {"role": "user", "content": "Is fire cold? Yes or no."}]
    first = client.complete_many([a, b, a], temperature=0, max_tokens=6)
    assert len(first) == 3 and first[0] == first[2] and all(isinstance(x, str) for x in first)
    assert client.stats["requests"] == 2  # the repeated request is sent once
    key = request_key(keyed_server.base_url, "smollm2", a, {"temperature": 0, "max_tokens": 6})
    stored = json.loads((tmp_path / "cache" / key[:2] / f"{key}.json").read_text())
    assert stored["choices"] == [first[0]] and stored["request"]["messages"] == a
    # Same answers from a fresh client, from disk, without a request; other settings are another request.
    fresh = ChatClient("smollm2", base_url=keyed_server.base_url, api_key_env=KEY_ENV,
                       cache_dir=tmp_path / "cache", progress=False)
    assert fresh.complete_many([b, a], temperature=0, max_tokens=6) == [first[1], first[0]]
    assert fresh.stats["requests"] == 0 and fresh.stats["cache_hits"] == 2
    fresh.complete(a, temperature=0, max_tokens=5)
    assert fresh.stats["requests"] == 1
    assert SERVER_KEY.encode() not in all_bytes(tmp_path / "cache")


@needs_server
def test_wrong_or_missing_key_is_a_clear_error_without_the_key(keyed_server, tmp_path, monkeypatch, capfd):
    wrong = "sk-wrong-" + secrets.token_hex(12)
    monkeypatch.setenv(KEY_ENV, wrong)
    backend = make_backend("openai", "smollm2", base_url=keyed_server.base_url, api_key_env=KEY_ENV,
                           cache_dir=tmp_path / "cache", retry_base_delay=0.05)
    config = GenerationConfig(do_sample=False, max_new_tokens=4)
    with pytest.raises(BackendError) as err:
        backend.generate([Prompt(text=PROMPTS[0], source="test")], config)
    assert backend.client.stats["retries"] == 0  # a rejected key is not retried
    message = str(err.value)
    assert f"${KEY_ENV}" in message and "rejected" in message and "HTTP 401" in message
    assert wrong not in message and wrong[-6:] not in message and SERVER_KEY not in message
    assert wrong not in "".join(capfd.readouterr())
    assert backend.client.stats["requests"] == 0 and not list((tmp_path).rglob("*.json"))

    # No key at all for a server that wants one: the placeholder is sent and the error says what to set.
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(BackendError, match=rf"needs an API key.*\${KEY_ENV} is not set"):
        make_backend("openai", "smollm2", base_url=keyed_server.base_url, api_key_env=KEY_ENV).generate(
            [Prompt(text=PROMPTS[0], source="test")], config)


@needs_server
def test_cli_generate_with_openai_backend(keyed_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in PROMPTS[:2]))
    out = tmp_path / "out"
    argv = ["generate", "--backend", "openai", "--model", "smollm2", "--base-url", keyed_server.base_url,
            "--api-key-env", KEY_ENV, "--prompts", str(prompts_file), "--preset", "paper-greedy",
            "--set", "max_new_tokens=8", "--out", str(out)]
    assert main(argv) == 0
    responses = read_records(out / "responses.jsonl", "response")
    assert len(responses) == 2 and len(list((out / "api_cache").rglob("*.json"))) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["backend"] == {"backend": "openai", "name": "smollm2", "base_url": keyed_server.base_url,
                                 "extra_sampling": True}
    assert SERVER_KEY.encode() not in all_bytes(out)
    assert SERVER_KEY not in "".join(capsys.readouterr())


@needs_server
def test_the_readme_vllm_command_runs_against_an_openai_compatible_server(keyed_server, tmp_path, monkeypatch):
    """The README's vLLM recipe (the openai backend on a self-hosted server), run against llama.cpp's server
    with only the endpoint, model, prompts and output swapped for local ones."""
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme[readme.index("safepref generate --backend openai --base-url"):]
    argv = shlex.split(block[: block.index("```")].replace("\\\n", " "))[1:]
    swap = {"--base-url": keyed_server.base_url, "--model": "smollm2", "--out": str(tmp_path / "out")}
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text(json.dumps({"prompt": PROMPTS[0]}) + "\n")
    swap["--prompts"] = str(prompts_file)
    argv = [swap.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    assert argv[argv.index("--preset") + 1] == "paper-sample" and argv[argv.index("--api-key-env") + 1] == \
        "VLLM_API_KEY"
    monkeypatch.setenv("VLLM_API_KEY", SERVER_KEY)
    assert main([*argv, "--set", "max_new_tokens=6"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["responses"] + summary["dropped"].get("too_short", 0) == 5  # paper-sample: 5 samples
    entry = json.loads(next((tmp_path / "out" / "api_cache").rglob("*.json")).read_text())
    assert entry["request"]["sampling"]["extra_body"] == {"repeat_penalty": 1.2, "repetition_penalty": 1.2,
                                                          "top_k": 50, "min_p": 0.0}


# ------------------------------------------------------------------------ endpoints that refuse or are silent


def test_refused_endpoint_fails_fast_with_endpoint_and_reason(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    port = free_port()  # nothing listens there
    client = ChatClient("m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=KEY_ENV, max_retries=2,
                        retry_base_delay=0.05, timeout=2, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{port}/v1 failed after 3 tries: cannot connect"):
        client.complete_many([[{"role": "user", "content": "hi"}]] * 2, max_tokens=4)
    assert client.stats["retries"] == 2 and client.stats["requests"] == 0


def test_silent_endpoint_times_out_and_is_retried(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        client = ChatClient("m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=KEY_ENV, max_retries=1,
                            retry_base_delay=0.05, timeout=0.5, cache_dir=tmp_path / "cache", progress=False)
        with pytest.raises(BackendError) as err:
            client.complete([{"role": "user", "content": "hi"}], max_tokens=4)
    assert client.stats["retries"] == 1 and client.stats["requests"] == 0
    assert "no answer within 0.5 s (timeout)" in str(err.value) and "2 tries" in str(err.value)
    assert SERVER_KEY not in str(err.value)


def test_cli_timeout_and_retry_flags_reach_the_client(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        code = main(["generate", "--backend", "openai", "--model", "m", "--base-url", f"http://127.0.0.1:{port}/v1",
                     "--api-key-env", KEY_ENV, "--prompts", str(prompts), "--out", str(tmp_path / "out"),
                     "--timeout", "0.5", "--max-retries", "0"])
    assert code == 1
    err = capfd.readouterr().err
    assert "no answer within 0.5 s (timeout)" in err and "1 tries" in err and SERVER_KEY not in err


def test_openai_without_key_names_the_variable(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    client = ChatClient("gpt-4o", api_key_env=KEY_ENV, progress=False)
    with pytest.raises(BackendError, match=rf"set the environment variable {KEY_ENV}"):
        client.complete([{"role": "user", "content": "hi"}])
    assert client.describe() == {"base_url": "https://api.openai.com/v1", "model": "gpt-4o",
                                 "api_key_env": KEY_ENV}


def test_a_key_given_as_variable_name_is_refused_without_echo():
    key = "sk-proj-" + secrets.token_hex(16)
    with pytest.raises(BackendError) as err:
        ChatClient("gpt-4o", api_key_env=key)
    assert key not in str(err.value) and "environment variable" in str(err.value)


def test_request_mapping_and_bad_settings(tmp_path, caplog):
    backend = make_backend("openai", "gpt-4o", cache_dir=tmp_path)
    assert backend.describe() == {"backend": "openai", "name": "gpt-4o", "base_url": "https://api.openai.com/v1",
                                  "extra_sampling": False}
    greedy = GenerationConfig(do_sample=False, max_new_tokens=32, system_prompt="Be safe.")
    assert backend.sampling(greedy) == {"max_tokens": 32, "temperature": 0.0}
    assert backend.messages(Prompt(text="Hi", source="t"), greedy) == [
        {"role": "system", "content": "Be safe."}, {"role": "user", "content": "Hi"}]
    with caplog.at_level(logging.WARNING, logger="safepref.generate.openai_api"):
        params = backend.sampling(GenerationConfig(repetition_penalty=1.2, no_repeat_ngram_size=3))
    assert "repetition_penalty=1.2 is not applied" in caplog.text
    assert "no_repeat_ngram_size=3 is not applied" in caplog.text
    assert "extra_body" not in params and "frequency_penalty" not in params
    with pytest.raises(ConfigError, match="raw"):
        backend.messages(Prompt(text="Hi", source="t"), GenerationConfig(prompt_format="raw"))
    local = make_backend("openai", "m", base_url="http://127.0.0.1:1/v1/", cache_dir=tmp_path)
    assert local.describe()["base_url"] == "http://127.0.0.1:1/v1" and local.extra_sampling
    assert local.sampling(GenerationConfig(top_k=20))["extra_body"] == {
        "repeat_penalty": 1.0, "repetition_penalty": 1.0, "top_k": 20, "min_p": 0.0}
    with pytest.raises(BackendError, match="non-empty list of messages"):
        local.client.complete_many([[]])
