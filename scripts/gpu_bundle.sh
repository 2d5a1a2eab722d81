#!/usr/bin/env bash
# Packs what a run needs on a GPU machine without network into parts small enough to carry one per call
# (64 MiB a call): the embedded SmolLM2 GGUF, all-MiniLM-L6-v2 (weights stored as float16 to fit; its config
# says float32, so it loads back as float32) and the offline data root. Writes .gpu/p0.d/part, .gpu/p1.d/part,
# ... (ignored by git), one folder to carry per call; scripts/gpu_run.sh joins and unpacks them there.
#   bash scripts/gpu_bundle.sh            (run in the project root with .venv set up; PYTHON=... for another)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
DATA=${SAFEPREF_DATA:-$(cd .. && pwd)/shared/data}
rm -rf .gpu/bundle .gpu/p? && mkdir -p .gpu/bundle
"${PYTHON:-.venv/bin/python}" - <<'PY'
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from safepref.models import embedded_gguf, minilm_folder

out = Path(".gpu/bundle")
gguf = embedded_gguf("smollm2-135m-instruct")
shutil.copy(gguf, out / gguf.name)
src = minilm_folder()
shutil.copytree(src, out / "minilm", ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "onnx",
                                                                   "openvino", "*.bin", "*.h5", "*.ot"))
weights = load_file(src / "model.safetensors")
save_file({k: v.half() for k, v in weights.items()}, out / "minilm" / "model.safetensors", metadata={"format": "pt"})
# transformers' dtype "auto" follows the config when it names one: load back as float32 (CPU code paths use it).
config_file = out / "minilm" / "config.json"
config = json.loads(config_file.read_text())
config["dtype"] = config["torch_dtype"] = "float32"
config_file.write_text(json.dumps(config, indent=2))
PY
cp -r "$DATA" .gpu/bundle/data && chmod -R u+w .gpu/bundle/data
tar -C .gpu -czf .gpu/bundle.tgz bundle
split -b 55000000 -d -a 1 .gpu/bundle.tgz .gpu/p
for f in .gpu/p?; do mkdir -p "$f.d" && mv "$f" "$f.d/part"; done
rm -rf .gpu/bundle .gpu/bundle.tgz
ls -la .gpu/p?.d
