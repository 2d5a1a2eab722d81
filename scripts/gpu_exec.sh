#!/usr/bin/env bash
# On the lent GPU machine: join the bundle parts that earlier calls carried (see scripts/gpu_bundle.sh), install
# the carried wheels (.whl), set the offline environment, then run any command (a benchmark, `safepref rm train`,
# a test) with its output also in $OUT/log.txt. scripts/gpu_run.sh does the same for `safepref run`.
#   bash scripts/gpu_exec.sh python -m safepref rm train --kind finetuned --out /root/rm
set -uo pipefail
M=/root/m
OUT=${OUT:-/root/out}
mkdir -p "$M" "$OUT"
for d in .gpu/p?.d; do [ -f "$d/part" ] && cp "$d/part" "$M/$(basename "$d" .d)"; done
# Only carrying a part: unpack when the command comes. Unpacking the first part alone would leave a truncated
# bundle/ (the GGUF cut in half) that later calls take as complete; so unpack aside and rename on success.
[ $# -eq 0 ] && exit 0
if [ ! -d "$M/bundle" ]; then
  rm -rf "$M/.unpack" && mkdir -p "$M/.unpack"
  { cat "$M"/p? | tar -C "$M/.unpack" -xzf - && mv "$M/.unpack/bundle" "$M/bundle"; } \
    || { echo "bundle incomplete: $(ls "$M")"; exit 2; }
fi
if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export SAFEPREF_SMOLLM2_GGUF=$M/bundle/SmolLM2-135M-Instruct.Q4_1.gguf SAFEPREF_MINILM=$M/bundle/minilm
export SAFEPREF_DATA=$M/bundle/data SAFEPREF_CACHE=${SAFEPREF_CACHE:-/root/cache}
"$@" 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
