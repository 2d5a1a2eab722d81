#!/usr/bin/env bash
# Re-make the default `safety` judge shipped in src/safepref/evaluate/data/safety-judge/ (run after bumping
# JUDGE_VERSION in safepref/evaluate/safety_judge.py): trains it from nothing on the offline data and measures it
# on the held-out sets (saved in its judge.json). About 7 minutes on 2 idle CPU cores from a cold embedding cache (6 min 57 s, 2026-12-07).
# Then publish its validation with benchmarks/judge_validation.py and commit the folder and docs/validation/.
#   SAFEPREF_DATA=../shared/data bash scripts/ship_judge.sh
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-.venv/bin/python}" -m safepref eval train-judge --out src/safepref/evaluate/data/safety-judge --force
