#!/usr/bin/env bash
# The main job, from nothing: set-up, then the whole study on the embedded SmolLM2-135M-Instruct with the
# offline data ($SAFEPREF_DATA, default ../shared/data beside the checkout). Writes runs/quickstart/report.md.
#   bash scripts/quickstart.sh                 # kill it any time; rerunning resumes from the finished stages
#   bash scripts/quickstart.sh --dry-run       # the plan only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export SAFEPREF_DATA=${SAFEPREF_DATA:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
safepref run configs/quickstart.yaml --out runs/quickstart "$@"
