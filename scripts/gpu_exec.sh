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
if [ ! -d "$M/bundle" ]; then
  cat "$M"/p? | tar -C "$M" -xzf - || { echo "bundle incomplete: $(ls "$M")"; exit 2; }
fi
if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
fi
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export SAFEPREF_SMOLLM2_GGUF=$M/bundle/SmolLM2-135M-Instruct.Q4_1.gguf SAFEPREF_MINILM=$M/bundle/minilm
export SAFEPREF_DATA=$M/bundle/data SAFEPREF_CACHE=${SAFEPREF_CACHE:-/root/cache}
[ $# -eq 0 ] && exit 0   # only carrying a part
"$@" 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
