"""The one condition table: what build, the pipeline and the report read from it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from safepref import conditions as cond
from safepref.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_gives_the_studys_order_kinds_and_generations():
    # the bars of the study's main figure, left to right, then the RM-swap variants
    assert cond.CONDITION_ORDER == ["sft", "hc-self", "gpt4o-self", "stronger-self", "peer-rm", "all-rm",
                                    "original", "self-rm"]
    assert cond.EXTRA_CONDITIONS == ["gpt4o-self-rm", "stronger-self-rm"]
    assert {k for k, v in cond.CONDITION_KIND.items() if v != "multi"} == {"sft", "original", "self-rm"}
    assert (cond.CONDITION_KIND["sft"], cond.CONDITION_KIND["original"], cond.CONDITION_KIND["self-rm"]) == (
        "start", "human", "self")
    generations = {name: c.generations for name, c in cond.CONDITIONS.items() if c.generations}
    assert generations == {"hc-self": ("greedy",), "gpt4o-self": ("greedy",), "stronger-self": ("greedy",),
                           "all-rm": ("sample",), "self-rm": ("sample",), "gpt4o-self-rm": ("greedy",),
                           "stronger-self-rm": ("greedy",)}


class _Roles:
    def __init__(self, gpt4o=None, stronger=None, peers=()):
        self.gpt4o, self.stronger, self.peers = gpt4o, stronger, list(peers)


class _Exp:
    def __init__(self, human="pku-realign", **roles):
        self.human, self.roles = human, _Roles(**roles)


def test_answer_names_and_what_a_condition_misses():
    table = cond.CONDITIONS
    roles = _Roles(gpt4o="g", stronger="a", peers=["a", "p"])
    assert cond.answer_names(table["all-rm"], roles) == ["g", "a", "p"]  # each once, in role order
    assert cond.answer_names(table["peer-rm"], roles) == ["a", "p"]
    assert cond.answer_names(table["stronger-self-rm"], roles) == ["a"]
    assert cond.answer_names(table["hc-self"], roles) == []
    assert cond.missing_role(table["hc-self"], _Exp(human=None)) == cond.ROLE_HELP["human"]
    assert cond.missing_role(table["gpt4o-self"], _Exp(stronger="a")) == cond.ROLE_HELP["gpt4o"]
    # a pool needs two sources: Peer+RM two peers; All+RM one other model beside the target's samples
    assert cond.missing_role(table["peer-rm"], _Exp(peers=["p"])) == cond.ROLE_HELP["peers"]
    assert cond.missing_role(table["all-rm"], _Exp()) == cond.ROLE_HELP["others"]
    assert cond.missing_role(table["all-rm"], _Exp(stronger="a")) is None
    assert cond.missing_role(table["self-rm"], _Exp(human=None)) is None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_report_and_the_table_do_not_import_the_pipeline():
    src = ROOT / "src" / "safepref"
    for path in [*src.glob("report*.py"), src / "conditions.py", src / "recipes.py"]:
        assert "safepref.pipeline" not in _imports(path), path.name
    assert not {n for n in _imports(src / "conditions.py") if n.startswith("safepref.")}


def test_a_new_table_entry_reaches_build_the_pipeline_and_the_report(monkeypatch, tmp_path):
    """One entry (an existing recipe) is all a new condition needs: build resolves it, the experiment accepts
    it, its build stage gets its inputs and the target's greedy answers, the report orders and labels it."""
    from safepref import report_figures
    from safepref.build import needed_inputs, resolve
    from safepref.pipeline import build_stages, load_experiment

    entry = cond.Condition("alpaca-self", "Alpaca+Self", "x-self", ("chosen", "target_greedy"),
                           "Alpaca-7B's answer", "target model's greedy answer", order=10, main=False,
                           roles=("stronger",))
    monkeypatch.setitem(cond.CONDITIONS, "alpaca-self", entry)
    monkeypatch.setitem(cond.CONDITION_KIND, "alpaca-self", "multi")
    monkeypatch.setattr(cond, "EXTRA_CONDITIONS", [*cond.EXTRA_CONDITIONS, "alpaca-self"])
    assert resolve("alpaca-self") == ("x-self", "alpaca-self")
    assert needed_inputs("x-self", "alpaca-self") == ({"chosen", "target_greedy"},
                                                      {"chosen", "target_greedy", "rm"})
    base = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**base, "conditions": ["sft", "alpaca-self"]}))
    stages = {s.name: s for s in build_stages(load_experiment(path), tmp_path)}
    assert stages["build/alpaca-self"].config["inputs"] == [
        ("--target-greedy", "responses.jsonl", "generate/self-greedy"), ("--chosen", "pku-safe-sft", None)]
    assert "generate/self-greedy" in stages and "generate/self-sample" not in stages
    assert report_figures.label("alpaca-self") == "Alpaca+Self"
    path.write_text(yaml.safe_dump({**base, "conditions": ["alpaca-self"], "roles": {"gpt4o": "gpt4o"}}))
    with pytest.raises(ConfigError, match="condition 'alpaca-self' needs a stronger model's answers"):
        load_experiment(path)


def test_the_build_stage_calls_the_library_and_records_the_command_it_equals(tiny_model_dir, data_root, tmp_path,
                                                                             capsys):
    """The pipeline's build stage runs build_set (no CLI); the command it records, typed by a user, writes the
    same pairs and datasheet."""
    import json
    import shlex

    from safepref.cli import main
    from safepref.graph import StageContext
    from safepref.pipeline import build_stages, load_experiment

    exp = load_experiment(ROOT / "configs" / "quickstart.yaml",
                          [f"target={tiny_model_dir}", "conditions=[original, peer-rm]", "reward_model=length",
                           "reward_training=null", "prompts.limit=6"])
    stages = {s.name: s for s in build_stages(exp, tmp_path)}
    stages["prompts"].run(StageContext(tmp_path / "prompts", {}, stages["prompts"].config))
    for condition in ("original", "peer-rm"):
        out = tmp_path / condition
        summary = stages[f"build/{condition}"].run(StageContext(out, {"prompts": tmp_path / "prompts"},
                                                                stages[f"build/{condition}"].config))
        assert summary == json.loads((out / "summary.json").read_text())
        argv = shlex.split(summary["command"])
        assert argv[:3] == ["safepref", "build", condition] and f"  $ {summary['command']}" in capsys.readouterr().out
        argv[argv.index("--out") + 1] = str(tmp_path / "typed")
        assert main(argv[1:]) == 0
        for name in ("pairs.jsonl", "datasheet.json"):
            assert (tmp_path / "typed" / name).read_text() == (out / name).read_text(), (condition, name)
        assert summary["pairs"] == (6 if condition == "original" else summary["prompts"])


def test_build_options_are_made_from_build_config():
    import argparse

    from safepref.build import BuildConfig
    from safepref.commands.build import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["peer-rm", "--out", "o", "--pool", "a", "--pool", "b", "--rescore",
                              "--limit-prompts", "7", "--min-sources", "3"])
    assert vars(args) == {**vars(BuildConfig("x", "y")), "recipe": "peer-rm", "out": "o", "pool": ["a", "b"],
                          "rescore": True, "limit_prompts": 7, "min_sources": 3}
    assert parser.parse_args(["self-rm", "--out", "o"]).pool == []  # the default list is not shared
    help_text = parser.format_help()
    assert "--target-greedy FILE" in help_text and "--max-per-prompt K" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["self-rm"])  # --out is required: BuildConfig.out has no default
