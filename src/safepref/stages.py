"""The library calls behind the stages: one typed config per stage, one function per config, used by both
``safepref run`` and the commands.

    from safepref.stages import GenerateCall, generate
    call = GenerateCall(model="smollm2-135m-instruct", prompts="advbench:8", out="out/gen", preset="paper-greedy")
    generate(call)

A stage's config is also its command line: ``safepref generate``, ``train``, ``rm train`` and ``audit`` make
their options from these dataclasses (``config.add_arguments_from``, help text included), build the config from
what they parsed and call the same function, so a setting is defined once and the command and the runner do the
same work. ``safepref run`` (``pipeline.py``) builds the configs itself: no argument list goes through argparse.
Each config's ``argv()`` is the `safepref ...` command a user could type for the same work; the runner logs it
and passes it as ``command`` to the functions that record one (training's run.json, the reward model's
metadata, audit.json). ``build`` has its own module (``safepref.build``: ``BuildConfig``, ``build_set``).
Heavy imports (torch, transformers, lm-eval) happen inside the functions.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safepref import provenance
from safepref.config import field
from safepref.evaluate import jailbreak as _jailbreak
from safepref.evaluate import refusal_eval as _refusal
from safepref.evaluate.general import PAPER_TASKS as _PAPER_TASKS
from safepref.experiment_checks import sets as _override_list
from safepref.generate import PRESETS

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# The commands' defaults for an OpenAI-compatible endpoint: parallel requests, seconds per request, retries.
API_DEFAULTS = {"concurrency": 8, "timeout": 120.0, "max_retries": 5}
SET_HELP = "override one setting (repeatable), e.g. --set {example}"


def _sets(overrides: dict[str, Any] | list[str]) -> list[str]:
    """``{"seed": 1}`` (sorted by key) or ``["seed=1"]`` (in order) -> ``["--set", "seed=1"]``."""
    items = _override_list(overrides) if isinstance(overrides, dict) else overrides
    return [x for item in items for x in ("--set", item)]


def _options(call: Any, names: tuple[str, ...]) -> list[str]:
    """The flags of the named fields of ``call`` that are set and differ from their defaults, in the order named
    (``--flag value``, a switch alone, a list's flag once per item)."""
    fields = {f.name: f for f in dataclasses.fields(call)}
    argv: list[str] = []
    for f in (fields[name] for name in names):
        value = getattr(call, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if value == default or value is None:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag)
        else:
            argv += [x for v in (value if isinstance(value, list) else [value]) for x in (flag, str(v))]
    return argv


def read_summary(folder: str | Path) -> dict[str, Any]:
    """A stage folder's summary.json ({} when the stage writes none): what the stage records as its summary."""
    summary_file = Path(folder) / "summary.json"
    return json.loads(summary_file.read_text()) if summary_file.exists() else {}


# ---------------------------------------------------------------------------------------------- generate


@dataclass(kw_only=True)
class BackendOptions:
    """The generation backend's options, shared by `generate` and the evaluations (each defined once)."""

    backend: str | None = field(None, help="hf, openai or fast (default: fast on a GPU, hf otherwise)")
    base_url: str | None = field(None, help="openai backend: endpoint (default: OpenAI's)")
    api_key_env: str = field(DEFAULT_KEY_ENV, help="openai backend: the environment variable that holds the key")
    concurrency: int = field(API_DEFAULTS["concurrency"], help="openai backend: parallel requests")
    timeout: float = field(API_DEFAULTS["timeout"], help="openai backend: seconds per request")
    max_retries: int = field(API_DEFAULTS["max_retries"],
                             help="openai backend: retries of a failed request (backoff); 0 = fail at once")
    device: str = field("auto", help="auto, cpu, cuda, cuda:1, mps")
    dtype: str = field("auto", help="auto, float32, bfloat16, float16")
    trust_remote_code: bool = field(False, help="allow the model's own code")

    def backend_options(self) -> dict[str, Any]:
        """The options a backend is made with: every field here but the backend's name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(BackendOptions) if f.name != "backend"}


@dataclass
class GenerateCall(BackendOptions):
    """`safepref generate`: answers of ``model`` to ``prompts`` in ``out`` (resumable shards)."""

    model: str = field(help="hub id, local folder, smollm2-135m-instruct, or API model name (backend openai)")
    prompts: str = field(help="prompt source: a name (advbench:100, xstest-safe, pku-realign:50) or a file")
    out: str = field(help="output folder")
    prompt_field: str = field("prompt", help="prompt column of a plain file")
    preset: str | None = field(None, choices=sorted(PRESETS), help="settings preset")
    config: str | None = field(None, help="YAML of generation settings (over the preset)")
    set: list[str] = field(default_factory=list, metavar="FIELD=VALUE",
                           help=SET_HELP.format(example="temperature=0.7"))
    overwrite: bool = field(False, help="replace a different generation run in --out (deletes only that run's own "
                                        "files; a folder holding no generation run is never overwritten)")

    def argv(self) -> list[str]:
        argv = ["generate", "--model", self.model, "--prompts", self.prompts,
                *(["--preset", self.preset] if self.preset else []), *_sets(self.set), "--out", self.out]
        if self.backend:
            argv += ["--backend", self.backend]
        if self.base_url:
            argv += ["--base-url", self.base_url]
        if self.backend == "openai" or self.api_key_env != DEFAULT_KEY_ENV:
            argv += ["--api-key-env", self.api_key_env]
        return argv + _options(self, ("prompt_field", "config", "concurrency", "timeout", "max_retries")) + [
            "--device", self.device, *_options(self, ("dtype", "trust_remote_code", "overwrite"))]


def generate(call: GenerateCall, command: str | None = None) -> dict[str, Any]:
    """`safepref generate`: the answers, written to ``call.out``; returns the generation summary. Generation
    records its settings and their hash, not a command."""
    from safepref.generate import default_backend, generation_config, make_backend, run_generation
    from safepref.generate.shards import check_out_dir
    from safepref.sources import load_prompts

    config = generation_config(call.preset, call.config, call.set)
    check_out_dir(call.out)  # before loading any model: a bad --out must not cost minutes of loading
    prompts, report = load_prompts(call.prompts, {"prompt": call.prompt_field})
    print(f"{len(prompts)} prompts from {call.prompts} (dropped: {dict(report.dropped) or 'none'})")
    name = call.backend or default_backend()
    if name == "openai":
        backend = make_backend(name, call.model, base_url=call.base_url, api_key_env=call.api_key_env,
                               concurrency=call.concurrency, timeout=call.timeout, max_retries=call.max_retries,
                               cache_dir=f"{call.out}/api_cache")
    else:
        backend = make_backend(name, call.model, device=call.device, dtype=call.dtype,
                               trust_remote_code=call.trust_remote_code)
    summary = run_generation(prompts, backend, config, call.out, overwrite=call.overwrite)
    summary["source"] = report.as_dict()
    return summary


# ------------------------------------------------------------------------------------------------- train


@dataclass
class TrainCall:
    """`safepref train`: DPO on ``pairs`` from ``model`` into ``out``."""

    pairs: str = field(help="preference pairs: a file (safepref pairs JSONL, or prompt/chosen/rejected columns) or "
                            "a source spec such as pku-realign:300")
    model: str = field(help="starting model: hub id, local folder (full or LoRA adapter), smollm2-135m-instruct")
    out: str = field(help="output folder (the trained checkpoint)")
    config: str | None = field(None, help="YAML of DPO settings (configs/train/*.yaml); default: the study's "
                                          "settings")
    set: list[str] = field(default_factory=list, metavar="FIELD=VALUE",
                           help=SET_HELP.format(example="beta=0.01 --set lora.r=8"))
    no_merge: bool = field(False, help="LoRA: save the adapter, not a merged model")
    overwrite: bool = field(False, help="replace a different run in --out")
    resume: bool = field(False, help="continue an interrupted run in --out")

    def argv(self) -> list[str]:
        # The order `safepref train` records in run.json and passes to each rank of a relaunch.
        return ["train", "--pairs", self.pairs, "--model", self.model, "--out", self.out,
                *(["--config", self.config] if self.config else []), *_sets(self.set),
                *_options(self, ("no_merge", "overwrite", "resume"))]

    def settings(self) -> Any:
        """The ``DPOTrainConfig``: the config file (or the study's settings) with the overrides."""
        from safepref.train import load_train_config

        return load_train_config(self.config, [*self.set, *(["merge_lora=false"] if self.no_merge else [])])


def train(call: TrainCall, command: str | None = None) -> dict[str, Any]:
    """``safepref.train.train_dpo`` with the call's settings; returns its summary ({} on ranks other than the
    main one). ``command`` goes into run.json (default: ``provenance.command``)."""
    from safepref.train import train_dpo

    return train_dpo(call.pairs, call.model, call.settings(), call.out, overwrite=call.overwrite,
                     resume=call.resume, command=provenance.command(command, call.argv()))


# ---------------------------------------------------------------------------------------------- rm train

# `rm train` options that are no config field of the head kind (``features``..., ``limit`` and ``seed`` are both).
_RM_KIND_ONLY = {"head": ("features", "embedder", "hidden"), "finetuned": ("backbone", "preset")}


@dataclass
class RMTrainCall:
    """`safepref rm train`: the offline safety reward model (a head on frozen embeddings, or a fine-tuned
    sequence classifier) into ``out`` (default ``$SAFEPREF_CACHE/reward/<name>``)."""

    kind: str = field("head", choices=("head", "finetuned"),
                      help="head: a small head on frozen MiniLM embeddings (default); finetuned: a whole sequence "
                           "classifier trained with TRL's RewardTrainer")
    preset: str = field("auto", help="finetuned only: smollm2 (GPU), minilm-cpu, or auto (smollm2 when a GPU is "
                                     "there)")
    backbone: str | None = field(None, help="finetuned only: model to start from")
    name: str | None = field(None, help="artifact name (default safety-minilm; finetuned: the preset's, "
                                        "safety-smollm2 or safety-minilm-ft)")
    out: str | None = field(None, help="output folder (default $SAFEPREF_CACHE/reward/<name>)")
    config: str | None = field(None, help="YAML of OfflineRMConfig fields")
    set: list[str] = field(default_factory=list, metavar="FIELD=VALUE",
                           help=SET_HELP.format(example="features=response"))
    pairs: list[str] | None = field(None, help="pair source (repeatable)")
    labels: list[str] | None = field(None, help="labelled source (repeatable)")
    features: str | None = field(None, help="concat, response or joint")
    embedder: str | None = field(None, help="all-MiniLM-L6-v2 or hashing")
    hidden: int | None = field(None, help="hidden units of the head (0 = linear)")
    limit: int | None = field(None, help="read at most N rows of each source (quick run)")
    seed: int | None = field(None, help="split and training seed")
    threads: int | None = field(None, help="CPU threads for torch (1 is often fastest on a busy machine)")
    device: str = field("auto", help="where the embedder runs: auto, cpu, cuda")
    overwrite: bool = field(False, help="replace an existing artifact folder")

    # Fields an experiment's ``reward_training`` may not set: the rm/train stage sets them, or they hold config
    # fields (a ``reward_training`` key that is no option here becomes a --set).
    OWN = ("name", "out", "overwrite", "config", "set")

    @classmethod
    def options(cls) -> list[str]:
        """The options an experiment's ``reward_training`` may give (the other keys are config fields)."""
        return [f.name for f in dataclasses.fields(cls) if f.name not in cls.OWN]

    @classmethod
    def from_options(cls, name: str, out: str, seed: int, options: dict[str, Any]) -> RMTrainCall:
        """The rm/train stage's call: ``reward_training`` keys that are options set them (a single pair or
        label source may be given alone), the others (config fields) become ``--set`` overrides."""
        known = set(cls.options())
        given = {k: [v] if k in ("pairs", "labels") and not isinstance(v, list) else v
                 for k, v in options.items() if k in known}
        fields = {k: v for k, v in options.items() if k not in known}
        return cls(**{"seed": seed, **given}, name=name, out=out, overwrite=True, set=_override_list(fields))

    def argv(self) -> list[str]:
        # The stage's own options first, then the others and the --set items by key (as experiments list them).
        own = ["rm", "train", *_options(self, ("name", "out", "overwrite", "seed"))]
        keyed = [(f, _options(self, (f,))) for f in self.options() if f != "seed"]
        keyed += [(item.split("=", 1)[0], ["--set", item]) for item in self.set]
        return own + [x for _, flags in sorted(keyed, key=lambda pair: pair[0]) for x in flags]


def train_rm(call: RMTrainCall, command: str | None = None) -> dict[str, Any]:
    """`safepref rm train`: trains the reward model and saves it in its folder (``rm_folder``); returns its
    metadata (``command`` in it; default: ``provenance.command``).

    Raises ConfigError for options of the other kind, or for a folder holding a model without ``overwrite``.
    """
    command = provenance.command(command, call.argv())
    if call.threads:  # as the command always did: for the rest of the process
        import torch

        torch.set_num_threads(call.threads)
    if call.kind == "finetuned":
        return _train_finetuned_rm(call, command)
    from safepref.config import load_config
    from safepref.errors import ConfigError
    from safepref.reward.offline import OfflineRMConfig, train_offline_rm

    _check_kind(call)
    config = load_config(OfflineRMConfig, call.config, _rm_overrides(call, ("name", "pairs", "labels", "features",
                                                                             "embedder", "hidden", "limit", "seed")))
    out = rm_folder(call, config.name)
    if (out / "rm.json").exists() and not call.overwrite:
        raise ConfigError(f"{out} already holds a reward model; pass --overwrite to replace it, or --name/--out")
    model, meta = train_offline_rm(config, device=call.device, progress=True, command=command)
    model.save(out)
    return meta


def _train_finetuned_rm(call: RMTrainCall, command: str) -> dict[str, Any]:
    from safepref.config import load_config
    from safepref.reward.finetuned import FinetunedRMConfig, pick_preset, train_finetuned_rm

    _check_kind(call)
    base = pick_preset(call.preset, call.device)
    preset = base.pop("preset")
    config = load_config(FinetunedRMConfig, call.config,
                         _rm_overrides(call, ("name", "backbone", "pairs", "labels", "limit", "seed")), base=base)
    print(f"preset {preset}: backbone {config.backbone}, {config.epochs:g} epochs, lr {config.lr:g}, "
          f"batch {config.batch_size}, limit {config.limit}; pairs {', '.join(config.pairs)}; never trained on: "
          f"{', '.join(config.exclude) or 'no source'}")
    return train_finetuned_rm(config, rm_folder(call, config.name), device=call.device, command=command,
                              overwrite=call.overwrite)


def _check_kind(call: RMTrainCall) -> None:
    """ConfigError for options that belong to the other kind (``preset`` counts when not auto)."""
    from safepref.errors import ConfigError

    if call.kind == "head" and (call.backbone is not None or call.preset != "auto"):
        raise ConfigError("--backbone and --preset belong to --kind finetuned")
    if call.kind == "finetuned" and any(v is not None for v in (call.features, call.embedder, call.hidden)):
        raise ConfigError("--features, --embedder and --hidden belong to --kind head")


def _rm_overrides(call: RMTrainCall, names: tuple[str, ...]) -> list[str]:
    """The named options that are set, as config overrides, then the ``--set`` items (which win)."""
    values = {name: getattr(call, name) for name in names}
    return [f"{k}={json.dumps(v)}" for k, v in values.items() if v is not None] + list(call.set)


def rm_folder(call: RMTrainCall, name: str) -> Path:
    """Where the reward model named ``name`` is saved: ``out``, or its default folder."""
    from safepref.reward.offline import default_folder

    return Path(call.out) if call.out else default_folder(name)

# ------------------------------------------------------------------------------------------------- audit


def _audit_default(name: str) -> Any:
    """``AuditConfig``'s default of a field: the command and the runner use the library's defaults."""
    from safepref.audit import AuditConfig

    f = next(f for f in dataclasses.fields(AuditConfig) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@dataclass
class AuditCall:
    """`safepref audit`: separability of preference sets by probes on each representation."""

    pairs: list[str] = field(metavar="PATH_OR_SPEC", help="a preference set: pairs.jsonl, a folder holding one, or "
                                                          "a source spec (repeatable)")
    name: list[str] = field(default_factory=list, help="display name of each --pairs, in the same order (default: "
                                                       "folder or file name)")
    model: str = field(_audit_default("model"), help="target (= reference) model: hub id, folder, "
                                                     "smollm2-135m-instruct, or none")
    representations: list[str] | None = field(
        None, flag="--repr", metavar="NAME",
        help=f"representation (repeatable; default: {' '.join(_audit_default('representations'))})")
    folds: int = field(_audit_default("folds"), help="cross-validation folds, grouped by prompt")
    seed: int = field(_audit_default("seed"), help="seed for folds, probes and bootstrap")
    C: float = field(_audit_default("C"), help="inverse L2 strength of the logistic regression")
    bootstrap: int = field(_audit_default("bootstrap"), help="bootstrap resamples for CIs (0 = none)")
    no_margin: bool = field(False, help="skip the reference model's log-prob margin")
    max_pairs: int | None = field(None, help="audit only the first N pairs of each set")
    prompt_format: str = field(_audit_default("prompt_format"), choices=("chat", "raw", "alpaca"),
                               help="how the target model sees the prompt (chat template, or raw text)")
    device: str = field(_audit_default("device"), help="auto, cpu, cuda, cuda:1, mps")
    dtype: str = field(_audit_default("dtype"), help="auto, float32, bfloat16, float16")
    batch_size: int = field(_audit_default("batch_size"), help="sequences per target-model batch")
    max_length: int = field(_audit_default("max_length"), help="prompt + response tokens kept")
    out: str | None = field(None, help="output folder for audit.json/.md/.png (default: none)")

    def names(self) -> list[str]:
        """The display name of each set: as given, or its folder or file name. ConfigError when the counts
        differ."""
        from safepref.errors import ConfigError

        if self.name and len(self.name) != len(self.pairs):
            raise ConfigError(f"--name given {len(self.name)} time(s) but --pairs {len(self.pairs)} time(s); "
                              f"give one name per set or none")
        return list(self.name) or [_default_name(spec) for spec in self.pairs]

    def settings(self) -> Any:
        """The ``safepref.audit.AuditConfig`` (model ``none`` = no model)."""
        from safepref.audit import AuditConfig

        return AuditConfig(
            representations=list(self.representations or _audit_default("representations")),
            model=None if str(self.model).lower() in ("none", "") else self.model, folds=self.folds,
            seed=self.seed, C=self.C, bootstrap=self.bootstrap, margin=not self.no_margin, max_pairs=self.max_pairs,
            device=self.device, dtype=self.dtype, batch_size=self.batch_size, max_length=self.max_length,
            prompt_format=self.prompt_format)

    def argv(self) -> list[str]:
        """Every option spelled out (names and representations resolved): the command audit.json records."""
        config = self.settings()
        argv = ["audit"]
        for spec, name in zip(self.pairs, self.names(), strict=True):
            argv += ["--pairs", spec, "--name", name]
        argv += ["--model", str(self.model)]
        for rep in config.representations:
            argv += ["--repr", rep]
        return argv + ["--folds", str(config.folds), "--seed", str(config.seed), "--C", str(config.C),
                       "--bootstrap", str(config.bootstrap), "--prompt-format", config.prompt_format,
                       "--max-length", str(config.max_length), "--batch-size", str(config.batch_size),
                       "--device", config.device, "--dtype", config.dtype,
                       *_options(self, ("no_margin", "max_pairs", "out"))]


def _default_name(spec: str) -> str:
    path = Path(spec)
    if path.is_dir():
        return path.name
    if path.is_file():
        return path.parent.name if path.name == "pairs.jsonl" else path.stem
    return spec


def audit(call: AuditCall, command: str | None = None) -> dict[str, Any]:
    """``safepref.audit.run_audit`` on the sets; returns its report (``command``, default
    ``provenance.command``, is recorded in audit.json)."""
    from safepref.audit import run_audit

    sets = list(zip(call.names(), call.pairs, strict=True))
    if call.out:
        from safepref.paths import check_output_dir

        check_output_dir(call.out)  # before any model loads
    return run_audit(sets, call.settings(), call.out, command=provenance.command(command, call.argv()))

# -------------------------------------------------------------------------------------------------- eval


@dataclass(kw_only=True)
class EvalAnswers(BackendOptions):
    """The answers `safepref eval jailbreak|refusal` judge: generated by ``model`` (the preset's settings) or
    read from ``answers``; ``judge_settings`` holds the judges' options (the command's --judge-* flags)."""

    out: str = field(help="output folder")
    model: str | None = field(None, help="hub id, local folder, or smollm2-135m-instruct")
    answers: str | None = field(None, help="judge saved answers instead (answers.jsonl, or a file with "
                                           "prompt/response)")
    limit: int | None = field(None, help="only the first N prompts (per set for refusal)")
    preset: str = field("paper-eval", choices=sorted(PRESETS),
                        help="generation settings (default paper-eval: Alpaca template, greedy, 512 tokens)")
    config: str | None = field(None, help="YAML of generation settings (over the preset)")
    set: list[str] = field(default_factory=list, metavar="FIELD=VALUE",
                           help=SET_HELP.format(example="max_new_tokens=128"))
    prompt_format: str | None = field(None, choices=("alpaca", "chat", "raw"),
                                      help="prompt wrapping (default: the preset's, alpaca)")
    overwrite: bool = field(False, help="replace a different generation run in --out")
    judge_settings: Any = field(None, option=False, help="JudgeSettings (None: the defaults)")

    def run_options(self) -> dict[str, Any]:
        """The arguments ``run_jailbreak`` and ``run_refusal`` share: the answers and the judge settings."""
        from safepref.evaluate.judges import JudgeSettings

        return dict(model=self.model, answers=self.answers, limit=self.limit, preset=self.preset,
                    config_path=self.config, overrides=list(self.set), prompt_format=self.prompt_format,
                    backend=self.backend, overwrite=self.overwrite,
                    judge_settings=self.judge_settings or JudgeSettings(),
                    backend_options=self.backend_options())

    def _argv(self, *head: str) -> list[str]:
        # The stage's options in the order safepref run has always logged them, then any other that is set.
        return [*head, "--out", self.out, *_sets(self.set), "--device", self.device, *_options(self, (
            "answers", "limit", "preset", "config", "prompt_format", "backend", "base_url", "api_key_env",
            "concurrency", "timeout", "max_retries", "dtype", "trust_remote_code", "overwrite"))]


@dataclass(kw_only=True)
class JailbreakCall(EvalAnswers):
    """`safepref eval jailbreak`: answers to harmful ``prompts``, judged by each judge."""

    prompts: str = field(_jailbreak.DEFAULT_PROMPTS,
                         help="prompt source (advbench:100, harmbench, xstest-unsafe, donotanswer, a file)")
    prompt_field: str = field("prompt", help="prompt column of a plain prompts/answers file")
    response_field: str = field("response", help="answer column of a plain answers file")
    judges: list[str] | None = field(None, flag="--judge", metavar="JUDGE", help=(
        "repeatable: keyword[:<list>], rubric[:<model>], classifier, hf-classifier:<folder> "
        f"(default: {' and '.join(_jailbreak.DEFAULT_JUDGES)})"))

    def argv(self) -> list[str]:
        head = ["eval", "jailbreak", *(["--model", self.model] if self.model else []), "--prompts", self.prompts]
        return self._argv(*head) + [x for j in self.judges or [] for x in ("--judge", j)] + _options(
            self, ("prompt_field", "response_field"))


def jailbreak(call: JailbreakCall, command: str | None = None) -> dict[str, Any]:
    """``evaluate.jailbreak.run_jailbreak`` (judges default: ``DEFAULT_JUDGES``); returns metrics.json's
    content."""
    return _jailbreak.run_jailbreak(
        call.out, judges=call.judges or list(_jailbreak.DEFAULT_JUDGES), prompts=call.prompts,
        prompt_field=call.prompt_field, response_field=call.response_field,
        command=provenance.command(command, call.argv()), **call.run_options())


@dataclass(kw_only=True)
class RefusalCall(EvalAnswers):
    """`safepref eval refusal`: over-refusal on safe prompts, compliance on unsafe ones."""

    safe_prompts: str = field(_refusal.SAFE_PROMPTS, help="prompts a model should answer")
    unsafe_prompts: str = field(_refusal.UNSAFE_PROMPTS, help="prompts it should refuse")
    detectors: list[str] | None = field(None, flag="--detector", metavar="DETECTOR", help=(
        f"repeatable: {', '.join(_refusal.DETECTORS)} (default: {' and '.join(_refusal.DEFAULT_DETECTORS)})"))

    def argv(self) -> list[str]:
        head = ["eval", "refusal", *(["--model", self.model] if self.model else []), "--safe-prompts",
                self.safe_prompts, "--unsafe-prompts", self.unsafe_prompts]
        return self._argv(*head) + [x for d in self.detectors or [] for x in ("--detector", d)]


def refusal(call: RefusalCall, command: str | None = None) -> dict[str, Any]:
    """``evaluate.refusal_eval.run_refusal`` (detectors default: ``DEFAULT_DETECTORS``); returns metrics.json's
    content."""
    return _refusal.run_refusal(
        call.out, detectors=call.detectors or list(_refusal.DEFAULT_DETECTORS), safe_prompts=call.safe_prompts,
        unsafe_prompts=call.unsafe_prompts, command=provenance.command(command, call.argv()), **call.run_options())


def _limit(text: str) -> int | float:
    """``--limit``: a count (``3``) or a fraction of each task (``0.5``)."""
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def _batch_size(text: str) -> int | str:
    return text if text.startswith("auto") else int(text)


@dataclass
class GeneralCall:
    """`safepref eval general`: lm-evaluation-harness tasks."""

    model: str = field(help="hub id, local folder, LoRA adapter folder, or smollm2-135m-instruct")
    out: str = field(help="output folder (results.json)")
    tasks: str = field("paper", help=f"comma list of lm-eval task names, or a preset: paper = "
                                     f"{','.join(_PAPER_TASKS)} (needs the hub); local = safepref_basic_mc (offline)")
    include_path: list[str] = field(default_factory=list, metavar="FOLDER",
                                    help="folder of custom task YAMLs (repeatable); safepref's own tasks are always "
                                         "known")
    limit: int | float | None = field(None, parse=_limit, help="examples per task (a fraction if < 1); for quick "
                                                               "checks, not for reporting")
    batch_size: int | str = field(8, parse=_batch_size, help="an integer or 'auto'")
    device: str = field("auto", help="auto, cpu, cuda, cuda:1, mps")
    dtype: str = field("auto", help="auto (bfloat16 on a GPU, else float32), float32, ...")
    num_fewshot: int | None = field(None, help="few-shot examples for every task (default: each task's own, "
                                               "mostly 0)")
    log_samples: bool = field(False, help="also write samples/<task>.jsonl")

    def argv(self) -> list[str]:
        return ["eval", "general", "--model", self.model, "--tasks", self.tasks, "--out", self.out,
                "--device", self.device, *_options(self, ("include_path", "limit", "batch_size", "dtype",
                                                          "num_fewshot", "log_samples"))]


def general(call: GeneralCall, command: str | None = None) -> dict[str, Any]:
    """``evaluate.general.evaluate_general`` on the call's tasks; returns the scores (results.json in ``out``)."""
    from safepref.evaluate.general import evaluate_general

    return evaluate_general(call.model, call.tasks, include_path=list(call.include_path), limit=call.limit or None,
                            device=call.device, batch_size=call.batch_size, out_dir=call.out,
                            num_fewshot=call.num_fewshot, dtype=call.dtype, log_samples=call.log_samples,
                            command=provenance.command(command, call.argv()))
