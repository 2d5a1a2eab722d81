"""One provenance helper: the command a stage records (given, the running `safepref` command line, or the
equivalent one) and the versions."""

from __future__ import annotations

import sys

from safepref import provenance
from safepref.cli import main


def test_the_command_recorded_and_its_order_of_precedence(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/python", "script.py", "--x"])
    # nothing given, no command line running: the equivalent command, else the process's argv
    assert provenance.command(None, ["audit", "--pairs", "a b.jsonl"]) == "safepref audit --pairs 'a b.jsonl'"
    assert provenance.command() == "/venv/bin/python script.py --x"
    with provenance.running_command(["build", "original", "--out", "o"]):
        assert provenance.command(None, ["ignored"]) == "safepref build original --out o"
        # a caller's command wins (safepref run passes each stage's), secrets removed
        given = "safepref generate --base-url http://u:sk-abcdefgh1234@host/v1"
        assert provenance.command(given) == "safepref generate --base-url http://host/v1"
        with provenance.running_command(["train"]):
            assert provenance.command() == "safepref train"
        assert provenance.command() == "safepref build original --out o"  # the outer one is back
    assert provenance.command(None, ["x"]) == "safepref x"


def test_the_cli_notes_its_arguments_while_a_command_runs(monkeypatch):
    from safepref.commands import sources

    seen = []
    monkeypatch.setattr(sources, "run", lambda args: seen.append(provenance.command(None, ["other"])) or 0)
    assert main(["sources", "advbench:2"]) == 0
    assert seen == ["safepref sources advbench:2"]
    assert provenance.command(None, ["other"]) == "safepref other"  # noted only while it ran


def test_versions_name_python_safepref_and_each_package():
    import importlib.metadata
    import platform

    found = provenance.versions("pyyaml", "no-such-package-xyz")
    assert found == {"python": platform.python_version(), "safepref": importlib.metadata.version("safepref"),
                     "pyyaml": importlib.metadata.version("pyyaml"), "no-such-package-xyz": "absent"}
