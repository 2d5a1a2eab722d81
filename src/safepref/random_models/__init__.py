"""Randomly initialised models of real architectures: ``random:<arch>[?tokenizer=<model spec>]``.

    safepref generate --model random:llama-2-7b --prompts advbench:16 --preset paper-greedy --out /tmp/gen
    safepref train --model "random:llama-3.1-8b?tokenizer=path/to/llama3" --pairs pku-realign:64 ...

Throughput and memory do not depend on weight values, so a random twin of a 7-8B model rehearses every stage
at the real shapes without downloading any weights (``safepref run <config> --rehearse N``). The text such a
model writes is noise: never report its answers, scores or ASR as results of anything.

Each architecture is a JSON file beside this module (``llama-2-7b.json``: the hub checkpoint's config.json plus
the hub ids it stands for). ``resolve`` writes a folder under ``$SAFEPREF_CACHE/models/`` holding that
config, the tokenizer and ``RANDOM_WEIGHTS.json`` (the marker every loader checks), but no weights: ``build``
creates the weights directly on the target device in the target dtype (a 7B model in bf16 on a GPU takes a
second or two, nothing is materialised in float32 on the CPU).

The tokenizer is the embedded SmolLM2 one unless the spec names another (any model spec: hub id or folder).
When the tokenizer has more tokens than the architecture's vocabulary (SmolLM2's 49,152 > Llama-2's 32,000),
the embedding is enlarged to hold it and ``RANDOM_WEIGHTS.json`` says by how much. Token counts of the same
text differ between tokenizers, so prompt lengths are approximate; generated lengths are exact, since a
random model always generates ``max_new_tokens`` (``min_new_tokens`` is set: it never stops early).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from safepref.errors import ModelError, did_you_mean

log = logging.getLogger(__name__)

PREFIX = "random:"
MARKER = "RANDOM_WEIGHTS.json"
DEFAULT_TOKENIZER = "smollm2-135m-instruct"
# Seconds spent building random models, appended by ``build``: the rehearsal reads it to split a stage's time
# into loading and work.
BUILD_SECONDS: list[float] = []

_HERE = Path(__file__).parent


def architectures() -> dict[str, dict[str, Any]]:
    """Architecture name -> its JSON (description, hub_ids, task, config)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(_HERE.glob("*.json"))}


def is_random_spec(spec: str | None) -> bool:
    return bool(spec) and str(spec).startswith(PREFIX)


def parse(spec: str) -> tuple[str, str]:
    """``random:<arch>[?tokenizer=<spec>]`` -> (arch, tokenizer spec). Raises ModelError for an unknown arch."""
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    arch, _, query = body.partition("?")
    tokenizer = DEFAULT_TOKENIZER
    if query:
        key, _, value = query.partition("=")
        if key != "tokenizer" or not value:
            raise ModelError(f"model spec '{spec}': the only option is ?tokenizer=<hub id or folder>")
        tokenizer = value
    known = architectures()
    if arch not in known:
        hint = did_you_mean(arch, list(known))
        raise ModelError(f"unknown random architecture '{arch}'.{hint} Known: {', '.join(known)}")
    return arch, tokenizer


def twin_of(hub_id: str) -> str | None:
    """The architecture whose JSON lists ``hub_id`` (case-insensitive), or None."""
    wanted = hub_id.strip().lower()
    for name, data in architectures().items():
        if wanted in (h.lower() for h in data.get("hub_ids", [])):
            return name
    return None


def provenance(spec: str | None) -> dict[str, Any]:
    """``{"random_weights": True}`` for a random spec, else ``{}``: merged into every provenance record."""
    return {"random_weights": True} if is_random_spec(spec) else {}


def is_random(location: str | Path) -> bool:
    """Does this resolved model folder hold a random twin (no weights, only the marker)?"""
    try:
        return (Path(location) / MARKER).is_file()
    except (OSError, TypeError, ValueError):
        return False


def info(location: str | Path) -> dict[str, Any]:
    """The marker's content: random_weights, architecture, tokenizer, vocabulary changes."""
    return json.loads((Path(location) / MARKER).read_text())


def resolve(spec: str) -> str:
    """The cached folder of ``spec`` (config, tokenizer, marker), written once. No weights are made here."""
    from safepref import paths

    arch, tokenizer_spec = parse(spec)
    digest = hashlib.sha256(tokenizer_spec.encode()).hexdigest()[:8]
    target = paths.cache_dir("models") / f"random-{arch}-{digest}"
    if (target / MARKER).exists():
        return str(target)
    from transformers import AutoConfig

    from safepref.models import load_tokenizer

    data = architectures()[arch]
    tokenizer = load_tokenizer(tokenizer_spec)
    config = dict(data["config"])
    marker = {"random_weights": True, "spec": spec, "architecture": arch, "description": data["description"],
              "task": data["task"], "tokenizer": tokenizer_spec, "tokenizer_size": len(tokenizer),
              "blank_ids": _blank_ids(tokenizer),
              "vocab_size": config["vocab_size"],
              "note": "randomly initialised weights: timings and memory only; its outputs mean nothing"}
    if len(tokenizer) > config["vocab_size"]:
        marker["vocab_enlarged_from"] = config["vocab_size"]
        config["vocab_size"] = marker["vocab_size"] = len(tokenizer)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            config[name] = value
    config["safepref_random_weights"] = True  # travels into the config.json of every checkpoint trained from it
    model_type = config.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **config)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".random-{arch}."))
    try:
        hf_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        if target.exists():  # a concurrent resolve won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(target)


def parameter_count(location: str | Path) -> int:
    """Parameters of the random model in ``location``, counted on the meta device (nothing is allocated)."""
    import torch

    with torch.device("meta"):
        model = _model_class(location).from_config(_config(location))
    return sum(p.numel() for p in model.parameters())


def build(location: str | Path, device: str = "cpu", dtype: Any = None) -> Any:
    """The random model of ``location`` built directly on ``device`` in ``dtype``, in eval mode.

    Seeded (the same folder always gives the same weights, so a DPO policy and its reference start equal).
    Raises torch.OutOfMemoryError before allocating when the weights alone exceed the free GPU memory.
    """
    import torch

    started = time.time()
    dtype = dtype or torch.float32
    _check_fits(location, device, dtype)
    devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(0)
        model = _model_class(location).from_config(_config(location), dtype=dtype)
        marker = info(location)
        _speak_the_tokenizer(model, marker.get("tokenizer_size"), marker.get("blank_ids", []))
    model.eval()
    log.warning("%s is a RANDOMLY INITIALISED %s (not a real model): its outputs are noise, use it for timings",
                marker["spec"], marker["architecture"])
    BUILD_SECONDS.append(time.time() - started)
    return model


def _blank_ids(tokenizer: Any) -> list[int]:
    """Ids that decode to nothing but whitespace (special tokens included)."""
    special = set(tokenizer.all_special_ids)
    return sorted(i for i in range(len(tokenizer))
                  if i in special or not tokenizer.decode([i], skip_special_tokens=True).strip())


def _speak_the_tokenizer(model: Any, tokens: int | None, blank_ids: list[int]) -> None:
    """Make every id the model picks one the tokenizer decodes to visible text.

    A vocabulary larger than the tokenizer (Llama-3's 128,256 ids, SmolLM2's 49,152 tokens) keeps its real shape,
    but ids past the tokenizer, special tokens and whitespace decode to nothing visible, and greedy decoding of
    random weights tends to repeat one token: answers would come out blank and be dropped, and DPO sequences
    would be shorter than the configured lengths. So the output rows of those ids are zeroed and the others
    drawn so that their logits outweigh those zeros: greedy and sampled ids alike are visible text.
    """
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or not tokens:
        return
    vocab, width = head.weight.shape
    blank = [i for i in blank_ids if i < vocab]
    silent, visible = vocab - tokens + len(blank), max(tokens - len(blank), 1)
    # logits ~N(0, sigma^2) (hidden states leave the final norm with length ~sqrt(d)): sigma such that the visible
    # ids outweigh the silent ones 50:1 at temperature 1 (sum of exp over visible ~ visible * e^(sigma^2 / 2)),
    # and no larger: samples must still differ from one another.
    sigma = max(1.0, math.sqrt(2 * math.log(max(50 * silent / visible, 1.0))))
    with torch.no_grad():  # (V, d)
        head.weight[:tokens].normal_(0.0, sigma / width ** 0.5)
        head.weight[tokens:].zero_()
        head.weight[blank] = 0


def _config(location: str | Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(location))


def _model_class(location: str | Path) -> Any:
    return _model_class_for_task(info(location)["task"])


def _model_class_for_task(task: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "sequence-classification" else AutoModelForCausalLM


def _check_fits(location: str | Path, device: str, dtype: Any) -> None:
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return
    needed = parameter_count(location) * torch.empty((), dtype=dtype).element_size()
    free, total = torch.cuda.mem_get_info(torch.device(device))
    if needed > free:
        raise torch.OutOfMemoryError(
            f"{info(location)['spec']}: the weights alone need {needed / 2**30:.1f} GiB in {dtype}, "
            f"{free / 2**30:.1f} GiB of {total / 2**30:.1f} GiB are free on {device}")
