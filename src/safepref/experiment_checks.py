"""Checks of an experiment YAML's nested settings, run while it loads (``safepref run --dry-run`` included), so
that a typo fails before any work with an error naming its full key (``train.set.betta``).

Each check asks the registry that will later use the setting (presets, sources, judges, representations,
reward-model kinds, the stage configs' dataclasses) and turns its error into a ConfigError naming the key.
Nothing here loads a model or reads a data file's rows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safepref import config as cfg
from safepref.errors import ConfigError, SafeprefError, did_you_mean

# `rm train` options the pipeline sets itself (stage rm/train): not accepted under reward_training.
_RM_OWN_OPTIONS = {"name", "out", "overwrite", "help"}


def named(key: str, check: Callable[[], Any]) -> Any:
    """Run ``check``; a SafeprefError it raises becomes a ConfigError naming ``key`` (once)."""
    try:
        return check()
    except SafeprefError as exc:
        text = str(exc)
        raise ConfigError(text if f"'{key}" in text else f"config field '{key}': {text}") from None


def check_generation(key: str, preset: str, overrides: dict[str, Any]) -> None:
    """A preset name plus ``--set`` overrides, as `safepref generate`/`eval` will build them."""
    from safepref.generate import PRESETS, GenerationConfig, generation_config

    if preset not in PRESETS:
        hint = did_you_mean(preset, list(PRESETS), parenthetical=True)
        raise ConfigError(f"config field '{key.rsplit('.', 1)[0]}.preset': unknown preset '{preset}'{hint}; "
                          f"known: {', '.join(PRESETS)}")
    cfg.check_keys(GenerationConfig, overrides, key)
    named(key, lambda: generation_config(preset, None, sets(overrides)))


def check_train(config: str | None, overrides: dict[str, Any]) -> None:
    """The DPO config file and ``train.set`` overrides, loaded as `safepref train` loads them."""
    from safepref.train import DPOTrainConfig, load_train_config

    if config is not None and not Path(config).is_file():
        raise ConfigError(f"config field 'train.config': file not found: {config}")
    cfg.check_keys(DPOTrainConfig, overrides, "train.set")
    named("train.set", lambda: load_train_config(config, sets(overrides)))


def check_source(key: str, spec: str) -> None:
    """A source spec (registered name or file, with an optional row limit); a file must exist."""
    from safepref.sources import parse_spec

    parsed = named(key, lambda: parse_spec(spec))
    if parsed.path is not None and not parsed.path.exists():
        raise ConfigError(f"config field '{key}': file not found: {parsed.path}")


def check_model(key: str, spec: str) -> None:
    """A model spec: an embedded name, ``random:<arch>``, an existing checkpoint folder, or a hub id."""
    from safepref import random_models
    from safepref.models import EMBEDDED_MODELS, resolve_model

    if random_models.is_random_spec(spec):
        named(key, lambda: random_models.parse(spec))
    elif spec not in EMBEDDED_MODELS:  # resolving an embedded model converts it: too slow for a check
        named(key, lambda: resolve_model(spec))


def check_backend(key: str, name: str) -> None:
    from safepref.generate import BACKENDS

    if name not in BACKENDS:
        hint = did_you_mean(name, list(BACKENDS), parenthetical=True)
        raise ConfigError(f"config field '{key}': unknown generation backend '{name}'{hint}; "
                          f"known: {', '.join(BACKENDS)}")


def check_reward_model(spec: str) -> None:
    """A reward-model spec's kind (and its model, for hf kinds), without loading it."""
    from safepref.reward import REWARD_KINDS

    kind, _, target = spec.strip().partition(":")
    if kind not in REWARD_KINDS:
        if Path(spec).expanduser().is_dir():
            return
        hint = did_you_mean(kind, list(REWARD_KINDS), parenthetical=True, suffix=":…")
        raise ConfigError(f"config field 'reward_model': unknown reward model '{spec}'{hint}; known kinds: "
                          f"{', '.join(REWARD_KINDS)}, or the folder of a saved reward model")
    if kind in ("hf", "hf-chat"):
        if not target:
            raise ConfigError(f"config field 'reward_model': '{kind}' needs a hub id or folder: {kind}:<model>")
        check_model("reward_model", target)
    if kind == "length" and target:
        raise ConfigError(f"config field 'reward_model': 'length' takes no argument, got '{spec}'")


def check_reward_training(options: dict[str, Any]) -> None:
    """``reward_training`` keys: `safepref rm train` options, or fields of the config of its --kind."""
    flags = set(rm_train_flags())
    kind = options.get("kind", "head")
    fields = set(rm_config_fields(kind)) - _RM_OWN_OPTIONS
    for key in options:
        if key not in flags and key not in fields:
            known = sorted(flags | fields)
            hint = did_you_mean(key, known, parenthetical=True)
            raise ConfigError(f"unknown config field 'reward_training.{key}'{hint}; known for kind {kind}: "
                              f"{', '.join(known)}")


def rm_train_flags() -> list[str]:
    """Options of `safepref rm train` that ``reward_training`` may set (fields of ``stages.RMTrainCall``, which
    the command's options are made from)."""
    from safepref.stages import RMTrainCall

    return RMTrainCall.options()


def rm_config_fields(kind: str) -> list[str]:
    """Field names of the reward-model training config of ``kind`` (head or finetuned)."""
    if kind == "finetuned":
        from safepref.reward.finetuned import FinetunedRMConfig as config_class
    elif kind == "head":
        from safepref.reward.offline import OfflineRMConfig as config_class
    else:
        raise ConfigError(f"config field 'reward_training.kind': must be head or finetuned, got {kind!r}")
    return [f.name for f in dataclasses.fields(config_class)]


def check_judge(key: str, spec: str) -> None:
    from safepref.evaluate.judges import check_judge_spec

    named(key, lambda: check_judge_spec(spec))


def check_representation(key: str, spec: str) -> None:
    from safepref.audit.representations import parse_representation

    named(key, lambda: parse_representation(spec))


def sets(overrides: dict[str, Any]) -> list[str]:
    """``{"beta": 0.1}`` -> ``["beta=0.1"]``: overrides as the commands' ``--set`` receives them."""
    return [f"{key}={yaml_scalar(value)}" for key, value in sorted(overrides.items())]


def yaml_scalar(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def check_specs(exp: Any) -> None:
    """The experiment's top-level names: target, human pairs, named answers, reward model and its training."""
    check_model("target", exp.target)
    if exp.human is not None:
        check_source("human", exp.human)
    for name, answer in exp.answers.items():
        key = f"answers.{name}"
        if answer.source is not None:
            check_source(f"{key}.source", answer.source)
            continue
        check_backend(f"{key}.backend", answer.backend)
        if answer.backend != "openai":  # an API model name is the endpoint's business
            check_model(f"{key}.model", answer.model)
        check_generation(f"{key}.set", answer.preset, answer.set)
    check_reward_model(exp.reward_model)
    if exp.reward_training:
        check_reward_training(exp.reward_training)
