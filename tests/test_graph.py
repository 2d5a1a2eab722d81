"""The stage graph: order, cache keys, resume after a crash, recompute only what a change touches."""

from __future__ import annotations

import pytest

from safepref.errors import ConfigError
from safepref.graph import Stage, execute, order, plan, stage_keys


def _stages(calls: list[str], a_setting: int = 1, fail_on: str | None = None) -> list[Stage]:
    def make(name: str):
        def run(ctx):
            if name == fail_on:
                raise RuntimeError(f"{name} crashed")
            calls.append(name)
            (ctx.out_dir / "out.txt").write_text(name + "".join(sorted(ctx.inputs)))
            return {"name": name}

        return run

    return [
        Stage("report", make("report"), deps=["train/a", "train/b"]),
        Stage("train/a", make("train/a"), {"lr": 1}, deps=["build/a"]),
        Stage("train/b", make("train/b"), {"lr": 1}, deps=["build/b"]),
        Stage("build/a", make("build/a"), {"setting": a_setting}, deps=["generate"]),
        Stage("build/b", make("build/b"), {"setting": 1}, deps=["generate"]),
        Stage("generate", make("generate"), {"n": 5}),
    ]


def test_order_respects_dependencies():
    names = [s.name for s in order(_stages([]))]
    assert names.index("generate") < names.index("build/a") < names.index("train/a") < names.index("report")
    assert names.index("build/b") < names.index("train/b")


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"depends on unknown stage 'biuld/a' \(did you mean 'build/a'\?\)"):
        order([Stage("build/a", lambda c: {}), Stage("train", lambda c: {}, deps=["biuld/a"])])
    cycle = [Stage("a", lambda c: {}, deps=["b"]), Stage("b", lambda c: {}, deps=["c"]),
             Stage("c", lambda c: {}, deps=["a"])]
    with pytest.raises(ConfigError, match="cycle: a -> b -> c -> a"):
        order(cycle)
    with pytest.raises(ConfigError, match="defined twice"):
        order([Stage("a", lambda c: {}), Stage("a", lambda c: {})])


def test_rerun_is_cached_and_a_change_recomputes_only_downstream(tmp_path):
    calls: list[str] = []
    execute(_stages(calls), tmp_path, log=lambda m: None)
    assert len(calls) == 6
    calls.clear()
    execute(_stages(calls), tmp_path, log=lambda m: None)
    assert calls == []  # everything cached
    execute(_stages(calls, a_setting=2), tmp_path, log=lambda m: None)
    assert sorted(calls) == ["build/a", "report", "train/a"]  # generate and the b branch untouched


def test_crash_resumes_from_finished_stages(tmp_path):
    calls: list[str] = []
    with pytest.raises(RuntimeError, match="train/b crashed"):
        execute(_stages(calls, fail_on="train/b"), tmp_path, log=lambda m: None)
    finished = set(calls)
    rows = {r["stage"]: r["cached"] for r in plan(_stages([]), tmp_path)}
    assert {name for name, cached in rows.items() if cached} == finished
    calls.clear()
    execute(_stages(calls), tmp_path, log=lambda m: None)
    assert finished == {"generate", "build/a", "train/a", "build/b"}
    assert calls == ["train/b", "report"]


def test_keys_depend_on_upstream_config():
    base = stage_keys(_stages([]))
    changed = stage_keys(_stages([], a_setting=3))
    assert base["generate"] == changed["generate"] and base["build/b"] == changed["build/b"]
    assert base["build/a"] != changed["build/a"] and base["report"] != changed["report"]
