#!/usr/bin/env bash
# The test suite, from nothing: set-up, then every test (fast ones on tiny models, slow ones on the embedded
# SmolLM2). Offline data is read from $SAFEPREF_DATA (default: ../shared/data beside the checkout).
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -m "not slow"   # fast tests only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests   # the quickstart set-up plus lm-eval, llama-cpp-python's server, pytest, ruff
# The browser for report.html's tests (tests/test_report_html.py drives it through playwright): Debian's
# chromium, installed here for the tests only (the quickstart set-up does not need it), when root and missing.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "chromium could not be installed: the browser tests of report.html will be skipped"
fi
. .venv/bin/activate
export SAFEPREF_DATA=${SAFEPREF_DATA:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check src tests benchmarks
python -m pytest -q "$@"
