#!/usr/bin/env bash
# On a GPU machine without network (the lent H200 here): join the parts that scripts/gpu_bundle.sh wrote and
# earlier calls carried (.gpu/p0.d ... copied to /root/m), install the carried wheels (.whl), then run an
# experiment (default configs/quickstart-gpu.yaml) into /root/run, stopping cleanly after $BUDGET seconds so the
# call ends in time; rerun the same to resume. Results go to $OUT (the device tool's return folder).
#   bash scripts/gpu_run.sh [experiment.yaml] [safepref run options]
set -uo pipefail
M=/root/m
OUT=${OUT:-/root/out}
mkdir -p "$M" "$OUT"
for d in .gpu/p?.d; do [ -f "$d/part" ] && cp "$d/part" "$M/$(basename "$d" .d)"; done
if [ ! -d "$M/bundle" ]; then  # unpacked aside, renamed once complete: a partial unpack must not stay behind
  rm -rf "$M/.unpack" && mkdir -p "$M/.unpack"
  { cat "$M"/p? | tar -C "$M/.unpack" -xzf - && mv "$M/.unpack/bundle" "$M/bundle"; } \
    || { echo "bundle incomplete: $(ls "$M")"; exit 2; }
fi
if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export SAFEPREF_SMOLLM2_GGUF=$M/bundle/SmolLM2-135M-Instruct.Q4_1.gguf SAFEPREF_MINILM=$M/bundle/minilm
export SAFEPREF_DATA=$M/bundle/data SAFEPREF_CACHE=/root/cache
CONFIG=${1:-configs/quickstart-gpu.yaml}
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
start=$(date +%s)
# SIGINT first: the run stops the stage in flight the way Ctrl-C does, finished stages stay cached.
timeout -s INT -k 30 "${BUDGET:-540}" python3 -m safepref run "$CONFIG" --out /root/run "$@" 2>&1 | tee -a "$OUT/log.txt"
code=${PIPESTATUS[0]}
echo "exit $code after $(( $(date +%s) - start )) s (this call)" | tee -a "$OUT/log.txt"
for f in report.md summary.json asr.png refusal.png separability_vs_asr.png reward_accuracy.png; do
  [ -f "/root/run/$f" ] && cp "/root/run/$f" "$OUT/"
done
# Per-stage summaries, datasheets, audit tables, training curves, answers, per-answer verdicts and pairs (no
# weights, no shards): one archive, enough for `safepref report` to rebuild every table and report.html here.
(cd /root/run && find . \( -name '*.json' -o -name '*.md' -o -name '*.png' -o -name '*.csv' -o -name '*.jsonl' \
   -o -name '*.html' \) -not -path '*/checkpoint*' -not -path '*/shards/*' -not -name 'model*' -not -name 'tokenizer*' \
   | tar -czf "$OUT/stages.tgz" -T -) 2>/dev/null
exit "$code"
