"""The stages' typed configs are also their commands' options: a config's `argv()` parsed by its command gives
the same config back, and the library (everything outside cli.py and commands/) imports no command module."""

from __future__ import annotations

import ast
from pathlib import Path

from safepref import stages as st
from safepref.cli import build_parser
from safepref.config import from_arguments
from safepref.evaluate.judges import JudgeSettings

ROOT = Path(__file__).resolve().parents[1]


def _parsed(cls: type, argv: list[str]):
    return from_arguments(cls, build_parser().parse_args(argv))


def test_a_config_and_its_command_line_round_trip(tmp_path):
    calls = [
        st.GenerateCall(model="m", prompts="advbench:3", out="o", preset="paper-sample", set=["seed=1", "top_p=0.9"],
                        backend="openai", base_url="http://h/v1", concurrency=3, timeout=7.5, overwrite=True),
        st.GenerateCall(model="m", prompts="p.csv", out="o", prompt_field="q", dtype="float32", trust_remote_code=True),
        st.TrainCall(pairs="p.jsonl", model="m", out="o", config="c.yaml", set=["beta=0.2"], no_merge=True, resume=True),
        st.RMTrainCall(kind="finetuned", preset="minilm-cpu", name="n", out="o", pairs=["a", "b"], limit=5, seed=2,
                       set=["epochs=1"], threads=1, overwrite=True),
        st.AuditCall(pairs=["a.jsonl", "b.jsonl"], name=["A", "B"], model="none", representations=["length"],
                     folds=3, C=0.5, no_margin=True, max_pairs=9, prompt_format="raw", out=str(tmp_path / "audit")),
        st.JailbreakCall(model="m", prompts="harmbench:3", out="o", judges=["keyword", "classifier"],
                         set=["max_new_tokens=8"], limit=2, response_field="r", timeout=5.0, prompt_format="chat"),
        st.JailbreakCall(answers="a.jsonl", out="o", backend="hf", overwrite=True),
        st.RefusalCall(model="m", out="o", safe_prompts="xstest-safe:4", detectors=["opening"], preset="paper-greedy",
                       config="g.yaml", trust_remote_code=True),
        st.GeneralCall(model="m", out="o", tasks="local", include_path=["t1", "t2"], limit=0.5, batch_size="auto",
                       num_fewshot=2, log_samples=True),
        st.GeneralCall(model="m", out="o", limit=3, batch_size=4),
    ]
    for call in calls:
        assert _parsed(type(call), call.argv()) == call, call


def test_defaults_of_the_command_are_the_configs_defaults(tmp_path):
    # `safepref generate` with only the required options is GenerateCall with only those fields
    assert _parsed(st.GenerateCall, ["generate", "--model", "m", "--prompts", "p", "--out", "o"]) == st.GenerateCall(
        model="m", prompts="p", out="o")
    # the audit's defaults are the library's AuditConfig defaults (5 folds, 1000 resamples, all representations)
    config = st.AuditCall(pairs=["x.jsonl"]).settings()
    assert (config.folds, config.bootstrap, config.margin, config.model) == (5, 1000, True, "smollm2-135m-instruct")
    assert config.representations == ["hidden:auto", "minilm", "length", "refusal", "tfidf"]
    (tmp_path / "set-a").mkdir()
    (tmp_path / "set-a" / "pairs.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text("")
    # a set's default name: its folder for a pairs.jsonl, the file's stem, else the spec itself
    specs = [str(tmp_path / "set-a" / "pairs.jsonl"), str(tmp_path / "b.jsonl"), "pku-paper:20"]
    assert st.AuditCall(pairs=specs).names() == ["set-a", "b", "pku-paper:20"]
    # the evaluations: paper-eval answers judged by the default judges / detectors, default prompt sets
    jb = _parsed(st.JailbreakCall, ["eval", "jailbreak", "--model", "m", "--out", "o"])
    assert jb == st.JailbreakCall(model="m", out="o") and (jb.prompts, jb.preset, jb.judges) == (
        "advbench:100", "paper-eval", None)
    rf = _parsed(st.RefusalCall, ["eval", "refusal", "--model", "m", "--out", "o"])
    assert (rf.safe_prompts, rf.unsafe_prompts) == ("xstest-safe", "xstest-unsafe")
    assert rf.run_options()["judge_settings"] == JudgeSettings()  # the command passes its --judge-* ones


def test_the_rm_stage_keeps_its_options_and_sends_config_fields_to_set():
    call = st.RMTrainCall.from_options("safety", "out/rm", 0, {"kind": "head", "hidden": 0, "dropout": 0.1,
                                                                "labels": "l.jsonl", "seed": 3})
    assert (call.kind, call.hidden, call.labels, call.seed, call.set) == ("head", 0, ["l.jsonl"], 3, ["dropout=0.1"])
    assert call.argv() == ["rm", "train", "--name", "safety", "--out", "out/rm", "--overwrite", "--seed", "3",
                           "--set", "dropout=0.1", "--hidden", "0", "--labels", "l.jsonl"]
    assert "set" not in st.RMTrainCall.options() and "kind" in st.RMTrainCall.options()


def test_the_library_imports_no_command_module():
    src = ROOT / "src" / "safepref"
    offenders = []
    for path in src.rglob("*.py"):
        if path.name in ("cli.py", "__main__.py") or "commands" in path.relative_to(src).parts:
            continue
        tree = ast.parse(path.read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        if any(m == "safepref.cli" or m.startswith("safepref.commands") for m in modules):
            offenders.append(str(path.relative_to(src)))
    assert offenders == []


def test_the_runners_eval_commands_keep_their_shape():
    # safepref run logs (and records) these; they read as they always have
    assert st.JailbreakCall(model="m", prompts="advbench:4", out="o", judges=["keyword"], set=["seed=0"],
                            device="cpu").argv() == [
        "eval", "jailbreak", "--model", "m", "--prompts", "advbench:4", "--out", "o", "--set", "seed=0",
        "--device", "cpu", "--judge", "keyword"]
    assert st.RefusalCall(model="m", safe_prompts="s", unsafe_prompts="u", out="o").argv() == [
        "eval", "refusal", "--model", "m", "--safe-prompts", "s", "--unsafe-prompts", "u", "--out", "o",
        "--device", "auto"]
    assert st.GeneralCall(model="m", tasks="local", out="o", include_path=["/t"], limit=5).argv() == [
        "eval", "general", "--model", "m", "--tasks", "local", "--out", "o", "--device", "auto",
        "--include-path", "/t", "--limit", "5"]


def test_judge_options_are_made_from_judge_settings(tmp_path, capsys):
    from safepref.cli import main
    from safepref.commands.eval import _settings

    args = build_parser().parse_args(["eval", "validate-judge", "--labels", "l.jsonl", "--out", "o", "--phrases",
                                      "more-is-less-v1", "--judge-model", "m", "--judge-retries", "2",
                                      "--judge-extra", '{"grammar": "g"}', "--judge-device", "cpu"])
    assert _settings(args) == JudgeSettings(phrases="more-is-less-v1", rubric_model="m", max_retries=2,
                                            rubric_extra_body={"grammar": "g"}, device="cpu")
    # the answers' --device and the judges' --judge-device stay apart
    args = build_parser().parse_args(["eval", "jailbreak", "--model", "m", "--out", "o", "--device", "cuda"])
    assert (args.device, _settings(args)) == ("cuda", JudgeSettings())
    # a bad --judge-extra is one line naming the option, before any model loads
    assert main(["eval", "jailbreak", "--answers", "a.jsonl", "--out", str(tmp_path), "--judge-extra", "[1]"]) == 1
    assert capsys.readouterr().err.strip() == "safepref eval: error: --judge-extra must be a JSON object"
