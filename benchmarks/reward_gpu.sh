#!/usr/bin/env bash
# The fine-tuned reward model on one GPU, end to end: train it from nothing, evaluate it on the held-out
# PKU-SafeRLHF prompts, hh-rlhf harmless and the study's PKU test pairs (with the length and refusal baselines),
# time `rm score` on 5 answers x 1,000 prompts, then (with VARIANT=1, time permitting; about 2.5 min more) the
# preset's earlier recipe (recipe 1: no hh-rlhf harmless prompts in training) for a paired comparison. Measured: about 3 min in all. Results: $OUT/rm_results.tgz (eval JSONs, per-pair JSONL,
# the artifacts' safepref_rm.json) and $OUT/log.txt. Run through scripts/gpu_exec.sh after carrying the bundle:
#   bash scripts/gpu_exec.sh bash benchmarks/reward_gpu.sh
set -uo pipefail
R=/root/rmres
W=/root/rmwork
mkdir -p "$R" "$W"
start=$(date +%s)
pack() { tar -C "$R" -czf "$OUT/rm_results.tgz" . ; }
elapsed() { echo $(( $(date +%s) - start )); }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

echo "== train finetuned (preset smollm2) at $(elapsed) s"
python3 -m safepref rm train --kind finetuned --preset smollm2 --device cuda --out "$W/smol" || exit 1
cp "$W/smol/safepref_rm.json" "$R/smol.safepref_rm.json"; pack
for ds in pku-realign hh-harmless pku-paper; do
  echo "== eval $ds at $(elapsed) s"
  python3 -m safepref rm eval --rm "hf:$W/smol" --pairs "$ds" --device cuda --out "$R/smol-$ds.json"
  python3 -m safepref rm eval --rm length --pairs "$ds" --out "$R/length-$ds.json" > /dev/null
done
pack

echo "== rm score: 5 answers x 1,000 prompts at $(elapsed) s"
python3 - <<'PY'
from safepref.records import Response, write_jsonl
from safepref.sources import load_pairs
pairs, _ = load_pairs("pku-realign")
prompts = sorted({p.prompt_text for p in pairs})
answers = [t for p in pairs for t in (p.chosen_text, p.rejected_text)]
rows = [Response(prompt=f"{prompts[i % len(prompts)]} ({i})", response=answers[(5 * i + k) % len(answers)],
                 source={"kind": "dataset", "name": "pku-realign"}, sample_index=k)
        for i in range(1000) for k in range(5)]
write_jsonl("/root/rmwork/speed/responses.jsonl", rows)
PY
python3 -m safepref rm score --rm "hf:$W/smol" --responses "$W/speed/responses.jsonl" --device cuda \
  --out "$W/speed/scored" && cp "$W/speed/scored/summary.json" "$R/speed-summary.json"
pack

# VARIANT_BY: the variant starts only this many seconds in (default 200; more when the GPU is shared).
if [ "${VARIANT:-0}" = 1 ] && [ "$(elapsed)" -lt "${VARIANT_BY:-200}" ]; then
  echo "== variant: recipe 1 (no hh-harmless training prompts) at $(elapsed) s"
  python3 -m safepref rm train --kind finetuned --preset smollm2 --device cuda --out "$W/smol1" --name safety-smollm2-r1 \
    --set 'pairs=["pku-realign", "pku-paper"]' --set 'exclude=["hh-harmless"]' \
    && cp "$W/smol1/safepref_rm.json" "$R/smol1.safepref_rm.json" \
    && for ds in hh-harmless pku-realign; do
         python3 -m safepref rm eval --rm "hf:$W/smol1" --pairs "$ds" --device cuda --out "$R/smol1-$ds.json"
       done
  pack
else
  echo "== variant skipped: $(elapsed) s used"
fi
echo "== done at $(elapsed) s"
