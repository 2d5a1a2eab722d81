#!/usr/bin/env bash
# The test suite, from nothing: set-up, then every test (fast ones on tiny models, slow ones on the embedded
# SmolLM2). Offline data is read from $SAFEPREF_DATA (default: ../shared/data beside the checkout).
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -m "not slow"   # fast tests only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export SAFEPREF_DATA=${SAFEPREF_DATA:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check src tests benchmarks
python -m pytest -q "$@"
