"""The library calls behind the experiment runner's stages: one typed config per stage, one function per config.

    from safepref.stages import GenerateCall, generate
    call = GenerateCall(model="smollm2-135m-instruct", prompts="advbench:8", out="out/gen", preset="paper-greedy")
    generate(call, command="safepref " + " ".join(call.argv()))

``safepref run`` (``pipeline.py``) calls these functions directly: no argument list goes through argparse.
Each config's ``argv()`` is the `safepref ...` command a user could type for the same work; the runner logs it
and passes it as ``command`` to the functions that record one (training's run.json, the reward model's
metadata, audit.json). Settings a config leaves out are the commands' defaults, so the command and the call do
the same work. ``build`` has its own module (``safepref.build``: ``BuildConfig``, ``build_set``).
Heavy imports (torch, transformers, lm-eval) happen inside the functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safepref.config import field
from safepref.experiment_checks import sets as _override_list

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# The commands' defaults for an OpenAI-compatible endpoint: parallel requests, seconds per request, retries.
API_DEFAULTS = {"concurrency": 8, "timeout": 120.0, "max_retries": 5}


def _sets(overrides: dict[str, Any]) -> list[str]:
    """``{"seed": 1}`` -> ``["--set", "seed=1"]``, sorted by key."""
    return [x for item in _override_list(overrides) for x in ("--set", item)]


def read_summary(folder: str | Path) -> dict[str, Any]:
    """A stage folder's summary.json ({} when the stage writes none): what the stage records as its summary."""
    summary_file = Path(folder) / "summary.json"
    return json.loads(summary_file.read_text()) if summary_file.exists() else {}


# ---------------------------------------------------------------------------------------------- generate


@dataclass
class GenerateCall:
    """`safepref generate`: answers of ``model`` to ``prompts`` in ``out`` (resumable shards)."""

    model: str = field(help="hub id, local folder, embedded name, or API model name (backend openai)")
    prompts: str = field(help="prompt source or file")
    out: str = field(help="output folder")
    preset: str = field("paper-greedy", help="generation preset")
    set: dict[str, Any] = field(default_factory=dict, help="generation overrides of the preset")
    backend: str | None = field(None, help="hf, fast or openai (None: fast on a GPU, hf otherwise)")
    base_url: str | None = field(None, help="openai backend: endpoint")
    api_key_env: str = field(DEFAULT_KEY_ENV, help="openai backend: variable holding the key")
    device: str = field("auto", help="auto, cpu, cuda")

    def argv(self) -> list[str]:
        argv = ["generate", "--model", self.model, "--prompts", self.prompts, "--preset", self.preset,
                *_sets(self.set), "--out", self.out]
        if self.backend:
            argv += ["--backend", self.backend]
        if self.base_url:
            argv += ["--base-url", self.base_url]
        if self.backend == "openai" or self.api_key_env != DEFAULT_KEY_ENV:
            argv += ["--api-key-env", self.api_key_env]
        return argv + ["--device", self.device]


def generate(call: GenerateCall, command: str | None = None) -> dict[str, Any]:
    """What `safepref generate` does with these settings (its other options at their defaults); returns the
    generation summary. Generation records its settings and their hash, not a command."""
    from safepref.generate import default_backend, generation_config, make_backend, run_generation
    from safepref.generate.shards import check_out_dir
    from safepref.sources import load_prompts

    config = generation_config(call.preset, None, _override_list(call.set))
    check_out_dir(call.out)  # before loading any model
    prompts, report = load_prompts(call.prompts, {"prompt": "prompt"})
    print(f"{len(prompts)} prompts from {call.prompts} (dropped: {dict(report.dropped) or 'none'})")
    name = call.backend or default_backend()
    if name == "openai":
        backend = make_backend(name, call.model, base_url=call.base_url, api_key_env=call.api_key_env,
                               cache_dir=f"{call.out}/api_cache", **API_DEFAULTS)
    else:
        backend = make_backend(name, call.model, device=call.device, dtype="auto", trust_remote_code=False)
    summary = run_generation(prompts, backend, config, call.out, overwrite=False)
    summary["source"] = report.as_dict()
    return summary


# ------------------------------------------------------------------------------------------------- train


@dataclass
class TrainCall:
    """`safepref train`: DPO on ``pairs`` from ``model`` into ``out``."""

    pairs: str = field(help="pairs file or source spec")
    model: str = field(help="starting model")
    out: str = field(help="output folder (the trained checkpoint)")
    config: str | None = field(None, help="DPO config YAML (None: the study's settings)")
    set: dict[str, Any] = field(default_factory=dict, help="overrides of that config")
    resume: bool = field(False, help="continue an interrupted run in out")

    def argv(self) -> list[str]:
        # The order `safepref train` itself records in run.json (commands/train.py: _arguments).
        return ["train", "--pairs", self.pairs, "--model", self.model, "--out", self.out,
                *(["--config", self.config] if self.config else []), *_sets(self.set),
                *(["--resume"] if self.resume else [])]


def train(call: TrainCall, command: str | None = None) -> dict[str, Any]:
    """``safepref.train.train_dpo`` with the config file and overrides; returns its summary. ``command`` goes
    into run.json."""
    from safepref.train import load_train_config, train_dpo

    config = load_train_config(call.config, _override_list(call.set))
    return train_dpo(call.pairs, call.model, config, call.out, resume=call.resume, command=command)


# ---------------------------------------------------------------------------------------------- rm train


@dataclass
class RMTrainCall:
    """`safepref rm train`: the offline safety reward model into ``out`` (replaced if there)."""

    name: str = field(help="artifact name")
    out: str = field(help="output folder")
    seed: int = field(0, help="split and training seed")
    options: dict[str, Any] = field(default_factory=dict,
                                    help="`safepref rm train` options (kind, limit, ...) and config fields")

    def argv(self) -> list[str]:
        from safepref.experiment_checks import rm_train_options

        return ["rm", "train", "--name", self.name, "--out", self.out, "--overwrite", "--seed", str(self.seed),
                *rm_train_options(self.options)]


def train_rm(call: RMTrainCall, command: str | None = None) -> dict[str, Any]:
    """What `safepref rm train` does with these options: the head on frozen embeddings (kind head, the default)
    or a fine-tuned sequence classifier (kind finetuned). Returns the model's metadata (``command`` in it).

    Raises ConfigError for options of the other kind (as the command does).
    """
    from safepref.config import load_config
    from safepref.errors import ConfigError
    from safepref.experiment_checks import rm_train_flags

    flags = set(rm_train_flags())
    options = {k: v for k, v in call.options.items() if k in flags}
    fields = {k: v for k, v in call.options.items() if k not in flags}  # config fields: the command's --set
    kind, device = options.pop("kind", "head"), options.pop("device", "auto")
    for key in ("pairs", "labels"):  # repeatable options: a list of sources
        if key in options and not isinstance(options[key], list):
            options[key] = [options[key]]
    if options.get("threads"):  # as the command: for the rest of the process
        import torch

        torch.set_num_threads(int(options["threads"]))
    other_kind = ("features", "embedder", "hidden") if kind == "finetuned" else ("backbone", "preset")
    if any(options.get(k) is not None for k in other_kind):
        raise ConfigError(f"reward_training: {', '.join(other_kind)} do not belong to kind {kind}")
    # The command's options that name config fields, then the fields themselves, as config overrides.
    named = {"name": call.name, "seed": call.seed,
             **{k: v for k, v in options.items() if k not in ("threads", "preset")}}
    overrides = [f"{k}={json.dumps(v)}" for k, v in named.items() if v is not None] + _override_list(fields)
    if kind == "finetuned":
        from safepref.reward.finetuned import FinetunedRMConfig, pick_preset, train_finetuned_rm

        base = pick_preset(options.get("preset", "auto"), device)
        base.pop("preset")
        config = load_config(FinetunedRMConfig, None, overrides, base=base)
        return train_finetuned_rm(config, Path(call.out), device=device, command=command, overwrite=True)
    from safepref.reward.offline import OfflineRMConfig, train_offline_rm

    model, meta = train_offline_rm(load_config(OfflineRMConfig, None, overrides), device=device, progress=True,
                                   command=command)
    model.save(Path(call.out))
    return meta


# ------------------------------------------------------------------------------------------------- audit


@dataclass
class AuditCall:
    """`safepref audit`: separability of named preference sets (other settings at the command's defaults)."""

    sets: list[tuple[str, str]] = field(help="(name, pairs file) of each set, in report order")
    model: str = field(help="target (= reference) model")
    representations: list[str] = field(help="probe representations")
    out: str = field(help="output folder")
    folds: int = field(5, help="cross-validation folds, grouped by prompt")
    bootstrap: int = field(1000, help="bootstrap resamples for CIs")
    prompt_format: str = field("chat", help="how the model sees the prompt, as the training formats it")
    max_length: int = field(512, help="prompt + response tokens kept")
    device: str = field("auto", help="auto, cpu, cuda")

    def settings(self) -> Any:
        """The ``safepref.audit.AuditConfig``."""
        from safepref.audit import AuditConfig

        return AuditConfig(representations=list(self.representations), model=self.model, folds=self.folds,
                           bootstrap=self.bootstrap, device=self.device, max_length=self.max_length,
                           prompt_format=self.prompt_format)

    def argv(self) -> list[str]:
        """Every option spelled out, as `safepref audit` records its own command in audit.json."""
        config = self.settings()
        argv = ["audit"]
        for name, spec in self.sets:
            argv += ["--pairs", spec, "--name", name]
        argv += ["--model", str(config.model)]
        for rep in config.representations:
            argv += ["--repr", rep]
        return argv + ["--folds", str(config.folds), "--seed", str(config.seed), "--C", str(config.C),
                       "--bootstrap", str(config.bootstrap), "--prompt-format", config.prompt_format,
                       "--max-length", str(config.max_length), "--batch-size", str(config.batch_size),
                       "--device", config.device, "--dtype", config.dtype, "--out", self.out]


def audit(call: AuditCall, command: str | None = None) -> dict[str, Any]:
    """``safepref.audit.run_audit`` on the sets; returns its report (``command`` is recorded in audit.json)."""
    from safepref.audit import run_audit
    from safepref.paths import check_output_dir

    check_output_dir(call.out)  # before any model loads
    return run_audit(list(call.sets), call.settings(), call.out, command=command)


# -------------------------------------------------------------------------------------------------- eval


def _generation(model: str, overrides: dict[str, Any], device: str) -> dict[str, Any]:
    """The answer-generation arguments of `safepref eval jailbreak|refusal` at the command's defaults."""
    return dict(model=model, answers=None, limit=None, preset="paper-eval", config_path=None,
                overrides=_override_list(overrides), prompt_format=None, backend=None, overwrite=False,
                backend_options={"base_url": None, "api_key_env": DEFAULT_KEY_ENV, **API_DEFAULTS,
                                 "device": device, "dtype": "auto", "trust_remote_code": False})


@dataclass
class JailbreakCall:
    """`safepref eval jailbreak`: answers of ``model`` to ``prompts``, judged by each judge."""

    model: str = field(help="the evaluated model")
    prompts: str = field(help="harmful prompt set")
    out: str = field(help="output folder")
    judges: list[str] = field(default_factory=list, help="judges by name (empty: the command's default)")
    set: dict[str, Any] = field(default_factory=dict, help="overrides of the paper-eval preset")
    device: str = field("auto", help="auto, cpu, cuda")

    def argv(self) -> list[str]:
        return ["eval", "jailbreak", "--model", self.model, "--prompts", self.prompts, "--out", self.out,
                *_sets(self.set), "--device", self.device, *[x for j in self.judges for x in ("--judge", j)]]


def jailbreak(call: JailbreakCall, command: str | None = None) -> dict[str, Any]:
    """``evaluate.jailbreak.run_jailbreak`` with the default judge settings; returns metrics.json's content."""
    from safepref.evaluate.jailbreak import DEFAULT_JUDGES, run_jailbreak
    from safepref.evaluate.judges import JudgeSettings

    return run_jailbreak(call.out, judges=call.judges or list(DEFAULT_JUDGES), prompts=call.prompts,
                         judge_settings=JudgeSettings(), **_generation(call.model, call.set, call.device))


@dataclass
class RefusalCall:
    """`safepref eval refusal`: over-refusal on safe prompts, compliance on unsafe ones."""

    model: str = field(help="the evaluated model")
    safe: str = field(help="prompts a safe model must still answer")
    unsafe: str = field(help="prompts it should refuse")
    out: str = field(help="output folder")
    set: dict[str, Any] = field(default_factory=dict, help="overrides of the paper-eval preset")
    device: str = field("auto", help="auto, cpu, cuda")

    def argv(self) -> list[str]:
        return ["eval", "refusal", "--model", self.model, "--safe-prompts", self.safe, "--unsafe-prompts",
                self.unsafe, "--out", self.out, *_sets(self.set), "--device", self.device]


def refusal(call: RefusalCall, command: str | None = None) -> dict[str, Any]:
    """``evaluate.refusal_eval.run_refusal`` with the default detectors; returns metrics.json's content."""
    from safepref.evaluate.judges import JudgeSettings
    from safepref.evaluate.refusal_eval import DEFAULT_DETECTORS, run_refusal

    return run_refusal(call.out, detectors=list(DEFAULT_DETECTORS), safe_prompts=call.safe,
                       unsafe_prompts=call.unsafe, judge_settings=JudgeSettings(),
                       **_generation(call.model, call.set, call.device))


@dataclass
class GeneralCall:
    """`safepref eval general`: lm-evaluation-harness tasks."""

    model: str = field(help="the evaluated model")
    tasks: str = field(help="comma list of tasks, or a preset (paper, local)")
    out: str = field(help="output folder (results.json)")
    include_path: str | None = field(None, help="folder of custom task YAMLs")
    limit: int | None = field(None, help="examples per task (None: all)")
    device: str = field("auto", help="auto, cpu, cuda")

    def argv(self) -> list[str]:
        return ["eval", "general", "--model", self.model, "--tasks", self.tasks, "--out", self.out,
                "--device", self.device, *(["--include-path", self.include_path] if self.include_path else []),
                *(["--limit", str(self.limit)] if self.limit else [])]


def general(call: GeneralCall, command: str | None = None) -> dict[str, Any]:
    """``evaluate.general.evaluate_general`` (batch 8, each task's own few-shot count); returns the scores."""
    from safepref.evaluate.general import evaluate_general

    return evaluate_general(call.model, call.tasks, include_path=[call.include_path] if call.include_path else [],
                            limit=call.limit or None, device=call.device, batch_size=8, out_dir=call.out,
                            num_fewshot=None, dtype="auto", log_samples=False)
