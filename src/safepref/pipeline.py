"""The whole study from one experiment YAML: every stage of the data flow as a cached, resumable graph.

  safepref run configs/quickstart.yaml              # run (or resume) everything, then write the report
  safepref run configs/quickstart.yaml --dry-run    # the plan: stages, cached or not
  safepref run configs/paper/llama-3.1-8b.yaml --dry-run   # validate a paper config (needs the hub to run)

Stages, in data-flow order. Each stage calls a library function with a typed config (``safepref.build.build_set``
for the sets, ``safepref.stages`` for the others), never the command line; each one is also a command of its
own, so a stage's output folder is exactly what that command writes, and the stage logs (and, where the output
records a command, records) the equivalent `safepref ...` command a user could type:

  prompts                      the training prompts (a PKU-SafeRLHF subset every answer source covers)
  generate/self-greedy         the target's greedy answers         (safepref generate --preset paper-greedy)
  generate/self-sample         the target's 5 samples a prompt     (safepref generate --preset paper-sample)
  generate/<answers>           answers of another model, for sources given as a model rather than a file
  build/<condition>            one preference set per condition    (safepref build <condition>)
  audit                        separability of every set           (safepref audit)
  train/<condition>            DPO on each set                     (safepref train)
  eval/<condition>, eval/sft   jailbreak ASR, over-refusal, general (safepref eval ...)
  report                       report.md, figures, summary.json    (safepref report)

With ``seeds: [0, 1, 2]`` the train and eval stages of each trained condition run once a seed
(``train/<condition>/seed-<s>``); everything that does not depend on the seed runs once with the first seed:
the prompts, the target's greedy answers and samples, the reward model, the preference sets, the audit and the
SFT evaluation (greedy). ``evaluate.jailbreak.sets`` adds prompt sets judged beside the study's AdvBench-100
(``eval/<condition>/jailbreak-<set>/``). A one-seed run without extra sets keeps the stage keys it had before.

Each stage's folder is ``<out>/stages/<stage>-<hash>``, the hash covering its settings and its inputs' hashes:
a rerun skips finished stages, a killed run resumes, and a changed setting recomputes only what depends on it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safepref import conditions as cond
from safepref import config as cfg
from safepref import experiment_checks as checks
from safepref import stages as st
from safepref.config import field, require
from safepref.errors import ConfigError, SafeprefError, did_you_mean
from safepref.graph import Stage, StageContext, execute, plan
from safepref.records import write_jsonl
from safepref.redact import command_line, redact_url

# The study's eight bars in the order of its figure, then its RM-swap variants (run only when listed): both
# read off the one condition table (safepref.conditions); kept importable from here.
CONDITION_ORDER = cond.CONDITION_ORDER
EXTRA_CONDITIONS = cond.EXTRA_CONDITIONS


@dataclass
class PromptsSection:
    source: str = field("pku-realign", help="prompt source for the preference sets (PKU-SafeRLHF prompts)")
    limit: int | None = field(32, help="number of prompts (chosen as `selection` says)")
    selection: str = field("hash", help="hash: the `limit` smallest prompt_ids (a fixed pseudo-random subset, "
                                        "independent of file order); rows: the prompts of the source's first "
                                        "`limit` rows, in file order (the study's selection; repeated prompts "
                                        "count once, so there may be fewer)")
    covered_by: list[str] = field(default_factory=list,
                                  help="answer names (see `answers`) that must answer every chosen prompt")
    prefer: list[str] = field(default_factory=list,
                              help="answer names whose prompts are chosen first (most of them answering first), "
                                   "then the rest: larger runs keep every prompt a sparse source answered")

    def __post_init__(self) -> None:
        require(self.limit is None or self.limit >= 2, "prompts.limit", "must be at least 2")
        require(self.selection in ("hash", "rows"), "prompts.selection",
                f"must be hash or rows, got {self.selection!r}")
        checks.check_source("prompts.source", self.source)


@dataclass
class AnswerSource:
    """Answers of a model other than the target: a file/source of answers, or a model to generate with."""

    source: str | None = field(None, help="answer source spec (gpt4o, pku-safe-sft, a responses JSONL)")
    model: str | None = field(None, help="or a model to generate with: hub id, folder, or API model name")
    backend: str = field("hf", help="backend for `model`: hf, fast, or openai (then base_url / api_key_env)")
    base_url: str | None = field(None, help="OpenAI-compatible endpoint for backend openai")
    api_key_env: str = field("OPENAI_API_KEY", help="environment variable holding the API key")
    preset: str = field("paper-greedy", help="generation preset for `model`")
    set: dict[str, Any] = field(default_factory=dict, help="generation overrides for `model`")

    def __post_init__(self) -> None:
        require((self.source is None) != (self.model is None), "answers.<name>",
                "give exactly one of `source` (answers on disk) or `model` (generate them)")


@dataclass
class Roles:
    gpt4o: str | None = field(None, help="answer name playing GPT-4o (GPT4o+Self, All+RM)")
    stronger: str | None = field(None, help="answer name playing the stronger model (Stronger+Self, All+RM)")
    peers: list[str] = field(default_factory=list, help="answer names of peer models (Peer+RM, All+RM)")
    peers_proxy: str | None = field(None, help="why the peers only stand in for models of the target's size "
                                               "(e.g. offline data); Peer+RM is then labelled a proxy in its "
                                               "datasheet and the report")


@dataclass
class GenerationSection:
    greedy: dict[str, Any] = field(default_factory=dict, help="overrides of the paper-greedy preset")
    sample: dict[str, Any] = field(default_factory=dict, help="overrides of the paper-sample preset")
    backend: str | None = field(None, help="hf or fast (default: fast on a GPU, hf otherwise)")

    def __post_init__(self) -> None:
        checks.check_generation("generation.greedy", "paper-greedy", self.greedy)
        checks.check_generation("generation.sample", "paper-sample", self.sample)
        if self.backend is not None:
            checks.check_backend("generation.backend", self.backend)


@dataclass
class TrainSection:
    config: str | None = field("configs/train/dpo-smollm2-lora.yaml", help="DPO config YAML")
    set: dict[str, Any] = field(default_factory=dict, help="overrides of that config")

    def __post_init__(self) -> None:
        checks.check_train(self.config, self.set)


@dataclass
class JailbreakSection:
    prompts: str = field("advbench:100", help="jailbreak prompt set (the study: first 100 AdvBench goals)")
    judges: list[str] = field(default_factory=lambda: ["keyword", "classifier"], help="judges by name")
    sets: list[str] = field(default_factory=list,
                            help="further prompt sets judged the same way, each reported apart and pooled with "
                                 "`prompts` (e.g. harmbench, donotanswer:300, a file)")

    def __post_init__(self) -> None:
        folders = [jailbreak_folder(spec, i == 0) for i, spec in enumerate([self.prompts, *self.sets])]
        require(len(set(folders)) == len(folders), "evaluate.jailbreak.sets",
                "two prompt sets share a name (" + ", ".join(sorted({f for f in folders if folders.count(f) > 1}))
                + "): give each set once")
        for i, spec in enumerate([self.prompts, *self.sets]):
            checks.check_source("evaluate.jailbreak." + ("prompts" if i == 0 else f"sets[{i - 1}]"), spec)
        for i, judge in enumerate(self.judges):
            checks.check_judge(f"evaluate.jailbreak.judges[{i}]", judge)
        checks.check_generation("evaluate.jailbreak.set", "paper-eval", self.set)
    set: dict[str, Any] = field(default_factory=dict, help="overrides of the paper-eval generation preset")


@dataclass
class RefusalSection:
    safe: str = field("xstest-safe", help="prompts a safe model must still answer")
    unsafe: str = field("xstest-unsafe", help="prompts it should refuse (compliance rate)")
    set: dict[str, Any] = field(default_factory=dict, help="generation overrides")

    def __post_init__(self) -> None:
        checks.check_source("evaluate.refusal.safe", self.safe)
        checks.check_source("evaluate.refusal.unsafe", self.unsafe)
        checks.check_generation("evaluate.refusal.set", "paper-eval", self.set)


@dataclass
class GeneralSection:
    tasks: str = field("paper", help="lm-eval tasks (comma list, `paper`, or local task names)")
    include_path: str | None = field(None, help="folder of custom task YAMLs")
    limit: int | None = field(None, help="examples per task")


@dataclass
class EvaluateSection:
    jailbreak: JailbreakSection | None = field(default_factory=JailbreakSection, help="jailbreak ASR")
    refusal: RefusalSection | None = field(default_factory=RefusalSection, help="over-refusal (XSTest)")
    general: GeneralSection | None = field(None, help="general capability through lm-eval (None = skip)")


@dataclass
class AuditSection:
    representations: list[str] = field(default_factory=lambda: ["hidden:auto", "minilm", "length", "refusal",
                                                                "tfidf"], help="probe representations")
    folds: int = field(5, help="cross-validation folds (grouped by prompt)")
    bootstrap: int = field(1000, help="bootstrap resamples for CIs")

    def __post_init__(self) -> None:
        for i, spec in enumerate(self.representations):
            checks.check_representation(f"audit.representations[{i}]", spec)


@dataclass
class ExperimentConfig:
    name: str = field(help="experiment name (the default output folder is runs/<name>)")
    target: str = field("smollm2-135m-instruct", help="the model to align: hub id, folder, or embedded name")
    conditions: list[str] = field(default_factory=lambda: list(CONDITION_ORDER), help="the study's bars to run")
    prompts: PromptsSection = field(default_factory=PromptsSection, help="training prompts")
    human: str | None = field("pku-realign", help="human-labelled pairs (Original, HC+Self)")
    answers: dict[str, AnswerSource] = field(default_factory=dict, help="named answers of other models")
    roles: Roles = field(default_factory=Roles, help="which named answers play GPT-4o, stronger, peers")
    reward_model: str = field("offline:safety-minilm", help="reward model for the +RM conditions")
    reward_training: dict[str, Any] | None = field(
        default_factory=dict, help="for an offline:<name> reward model: train it inside the run with these "
                                   "`safepref rm train` options (e.g. {limit: 2000}); None = use a trained one")
    generation: GenerationSection = field(default_factory=GenerationSection, help="the target's generation")
    max_pairs_per_prompt: int | None = field(None, help="at most this many pairs per prompt in every preference "
                                                        "set (1 = equal weight per prompt); None = no cap")
    train: TrainSection = field(default_factory=TrainSection, help="DPO")
    evaluate: EvaluateSection = field(default_factory=EvaluateSection, help="evaluations")
    audit: AuditSection | None = field(default_factory=AuditSection, help="separability audit (None = skip)")
    device: str = field("auto", help="device for every stage: auto, cpu, cuda")
    seed: int = field(0, help="seed passed to generation and training")
    seeds: list[int] | None = field(None, help="seeds of the experiment (e.g. [0, 1, 2]): each one trains and "
                                               "evaluates every condition, and the report pools them; what does "
                                               "not depend on it is made once with the first seed (prompts, "
                                               "answers and samples, reward model, sets, audit, SFT evaluation). "
                                               "null = [seed]")

    def __post_init__(self) -> None:
        for condition in self.conditions:
            if condition not in cond.CONDITIONS:
                hint = did_you_mean(condition, list(cond.CONDITIONS), parenthetical=True)
                raise ConfigError(f"config field 'conditions': unknown condition '{condition}'{hint}; "
                                  f"known: {', '.join(CONDITION_ORDER + EXTRA_CONDITIONS)}")
        require(len(set(self.conditions)) == len(self.conditions), "conditions", "a condition is listed twice")
        require(self.seeds is None or (len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds)), "seeds",
                "must list at least one seed, each once (or be null)")
        require(self.max_pairs_per_prompt is None or self.max_pairs_per_prompt >= 1, "max_pairs_per_prompt",
                "must be at least 1 (or null for no cap)")
        for role, names in (("gpt4o", [self.roles.gpt4o]), ("stronger", [self.roles.stronger]),
                            ("peers", self.roles.peers)):
            for name in names:
                if name is not None and name not in self.answers:
                    raise ConfigError(f"config field 'roles.{role}': '{name}' is not a name under `answers` "
                                      f"(known: {', '.join(self.answers) or 'none'})")
        for key in ("covered_by", "prefer"):
            for name in getattr(self.prompts, key):
                require(name in self.answers, f"prompts.{key}", f"'{name}' is not a name under `answers`")
        for condition in self.conditions:
            missing = cond.missing_role(cond.CONDITIONS[condition], self)
            if missing:
                raise ConfigError(f"condition '{condition}' needs {missing}")
        checks.check_specs(self)

    def run_seeds(self) -> list[int]:
        """The seeds the run trains with: ``seeds``, or ``[seed]``."""
        return list(self.seeds) if self.seeds else [self.seed]


def seed_stage(name: str, seed: int, seeds: list[int]) -> str:
    """``train/self-rm`` for a one-seed run (earlier runs keep their folders), ``train/self-rm/seed-1`` else."""
    return name if len(seeds) == 1 else f"{name}/seed-{seed}"


def jailbreak_folder(spec: str, primary: bool) -> str:
    """The eval folder of a jailbreak prompt set: ``jailbreak`` for the study's set, ``jailbreak-<set>`` else."""
    if primary:
        return "jailbreak"
    import re

    stem = Path(spec).stem if ("/" in spec or Path(spec).suffix) else spec
    return "jailbreak-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-")


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    data = cfg.load_yaml(path)
    data.setdefault("name", Path(path).stem)
    return cfg.load_config(ExperimentConfig, None, overrides, base=data)


# ---------------------------------------------------------------------------------------------- stages


def _yaml_scalar(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _select_prompts(ctx: StageContext) -> dict[str, Any]:
    from safepref.sources import load_prompts

    settings = ctx.config
    by_rows = settings.get("selection") == "rows" and settings["limit"]
    # rows: the source's first `limit` rows, as the study took them (a limit on the spec counts rows read).
    prompts, report = load_prompts(f"{settings['source']}:{settings['limit']}" if by_rows else settings["source"])
    coverage = {}
    for name, spec in settings["covered_by"].items():
        ids = _answered_prompt_ids(spec)
        coverage[name] = len(ids)
        prompts = [p for p in prompts if p.prompt_id in ids]
    if len(prompts) < 2:
        raise SafeprefError(f"only {len(prompts)} prompts of {settings['source']} are answered by every source "
                            f"in prompts.covered_by ({coverage})")
    preferred = [_answered_prompt_ids(spec) for spec in settings.get("prefer", {}).values()]
    # A fixed pseudo-random order (by prompt_id, independent of file order), prompts that more preferred
    # sources answered first.
    if not by_rows:
        prompts.sort(key=lambda p: (-sum(p.prompt_id in ids for ids in preferred), p.prompt_id))
    chosen = prompts[: settings["limit"]] if settings["limit"] else prompts
    write_jsonl(ctx.out_dir / "prompts.jsonl", [{"prompt": p.text, "prompt_id": p.prompt_id} for p in chosen])
    summary = {"prompts": len(chosen), "candidates": len(prompts), "source": report.as_dict(),
               "answers_per_source": coverage}
    if preferred:
        chosen_ids = {p.prompt_id for p in chosen}
        summary["chosen_answered_by"] = {name: len(ids & chosen_ids)
                                         for name, ids in zip(settings["prefer"], preferred, strict=True)}
    return summary


def _answered_prompt_ids(spec: str) -> set[str]:
    from safepref.sources import load_responses

    answers, _ = load_responses(spec)
    return {a.prompt_id for a in answers}


def _prompts_file(ctx: StageContext) -> str:
    return str(ctx.inputs["prompts"] / "prompts.jsonl")


def _calls_stage(make_calls: Any) -> Any:
    """A stage that makes the library calls ``make_calls(ctx)`` lists, as ``(function, typed config)``, in
    order; its summary is the summary.json the calls leave in its folder (as the commands write it)."""

    def run(ctx: StageContext) -> dict[str, Any]:
        for function, config in make_calls(ctx):
            _library_stage(function, config, config.argv())
        return st.read_summary(ctx.out_dir)

    return run


def _library_stage(function: Any, config: Any, argv: list[str]) -> dict[str, Any]:
    """Run a stage's library function on its typed config (returning its summary). The log and the stage's
    record name the equivalent `safepref ...` command; a failure says which command that was."""
    command = command_line(["safepref", *argv])
    print(f"  $ {command}", flush=True)
    try:
        return function(config, command=command)
    except SafeprefError as exc:
        raise type(exc)(f"{exc} (stage command: {command})") from None


def build_stages(exp: ExperimentConfig, run_dir: Path) -> list[Stage]:
    """The experiment as a stage graph (nothing runs here)."""
    stages: list[Stage] = []
    trained = [c for c in exp.conditions if c != "sft"]
    seeds = exp.run_seeds()
    base_seed = seeds[0]  # seed of the stages every seed shares (greedy answers do not depend on it)
    prompt_settings: dict[str, Any] = {"source": exp.prompts.source, "limit": exp.prompts.limit}
    for key in ("covered_by", "prefer"):
        specs = {name: exp.answers[name].source for name in getattr(exp.prompts, key)}
        if any(v is None for v in specs.values()):
            raise ConfigError(f"prompts.{key} may only name answers given as `source` (files), not models")
        if specs or key == "covered_by":  # keys absent when unused keep earlier runs' cache keys
            prompt_settings[key] = specs
    if exp.prompts.selection != "hash":  # absent for the default: earlier runs keep their cache keys
        prompt_settings["selection"] = exp.prompts.selection
    stages.append(Stage("prompts", _select_prompts, prompt_settings, description="select the training prompts"))

    needs_greedy = {c for c in trained if "greedy" in cond.CONDITIONS[c].generations}
    needs_sample = {c for c in trained if "sample" in cond.CONDITIONS[c].generations}
    for kind, needed, overrides in (("greedy", needs_greedy, exp.generation.greedy),
                                    ("sample", needs_sample, exp.generation.sample)):
        if not needed:
            continue
        settings = {"preset": f"paper-{kind}", "set": {"seed": base_seed, **overrides}, "model": exp.target}
        stages.append(Stage(
            f"generate/self-{kind}",
            _calls_stage(lambda ctx, s=settings: [(st.generate, st.GenerateCall(
                model=s["model"], prompts=_prompts_file(ctx), out=str(ctx.out_dir), preset=s["preset"],
                set=checks.sets(s["set"]), backend=exp.generation.backend, device=exp.device))]),
            settings, ["prompts"], description=f"the target's {kind} answers"))

    # Answers given as a model are generated on the training prompts; answers given as a file are read
    # directly by `safepref build`.
    answer_spec: dict[str, tuple[str, str | None]] = {}  # name -> (spec or stage-relative, stage)
    used = {n for n in [exp.roles.gpt4o, exp.roles.stronger, *exp.roles.peers] if n}
    for name in sorted(used):
        source = exp.answers[name]
        if source.source is not None:
            answer_spec[name] = (source.source, None)
            continue
        stages.append(_answer_stage(name, source, exp.device))
        answer_spec[name] = ("responses.jsonl", stages[-1].name)

    rm_stage = None
    if exp.reward_model.startswith("offline:") and exp.reward_training is not None:
        stages.append(_rm_train_stage(exp, base_seed))
        rm_stage = stages[-1].name
    for condition in trained:
        stages.append(_build_stage(exp, condition, answer_spec, rm_stage))
    if exp.audit is not None and trained:
        stages.append(_audit_stage(exp, trained))
    stages += [_train_stage(exp, condition, seed, seeds) for condition in trained for seed in seeds]
    for condition in exp.conditions:
        # The SFT model is evaluated once: greedy decoding does not depend on the seed.
        for seed in seeds[:1] if condition == "sft" else seeds:
            stages.append(_eval_stage(exp, condition, seed, seeds))
    report_settings: dict[str, Any] = {"conditions": exp.conditions, "name": exp.name}
    if len(seeds) > 1:  # absent for one seed: earlier runs keep their cache keys
        report_settings["seeds"] = seeds
    stages.append(Stage("report", _report_stage, report_settings,
                        [s.name for s in stages if s.name.startswith(("eval/", "train/", "build/", "audit"))],
                        description="report.md, figures, summary.json"))
    return stages


def _rm_train_stage(exp: ExperimentConfig, seed: int) -> Stage:
    """rm/train: `safepref rm train` with the experiment's ``reward_training`` options, into the stage folder."""
    options = exp.reward_training or {}
    settings = {"name": exp.reward_model.split(":", 1)[1], "options": options, "seed": seed}
    if options.get("kind") == "finetuned":  # a changed preset recipe retrains
        from safepref.reward.finetuned import RECIPE_VERSION

        settings["recipe_version"] = RECIPE_VERSION
    return Stage("rm/train", _calls_stage(lambda ctx, s=settings: [(
        st.train_rm, st.RMTrainCall.from_options(s["name"], str(ctx.out_dir), s["seed"], s["options"]))]),
        settings, [], description="train the offline safety reward model")


def _answer_stage(name: str, source: AnswerSource, device: str) -> Stage:
    """generate/<name>: the answers of a model given under `answers` (not a file), on the training prompts."""
    # stage.json records the settings: the endpoint goes there without credentials (the command gets it whole).
    settings = {"model": source.model, "backend": source.backend,
                "base_url": redact_url(source.base_url) if source.base_url else None,
                "api_key_env": source.api_key_env, "preset": source.preset, "set": source.set}

    def calls(ctx: StageContext, s: dict[str, Any] = settings, url: str | None = source.base_url) -> list:
        return [(st.generate, st.GenerateCall(
            model=s["model"], prompts=_prompts_file(ctx), out=str(ctx.out_dir), preset=s["preset"],
            set=checks.sets(s["set"]), backend=s["backend"], base_url=url, api_key_env=s["api_key_env"],
            device=device))]

    return Stage(f"generate/{name}", _calls_stage(calls), settings, ["prompts"],
                 description=f"answers of {source.model}")


def _train_stage(exp: ExperimentConfig, condition: str, seed: int, seeds: list[int]) -> Stage:
    settings = {"model": exp.target, "config": _abs(exp.train.config), "set": {"seed": seed, **exp.train.set}}
    return Stage(
        seed_stage(f"train/{condition}", seed, seeds),
        _calls_stage(lambda ctx, c=condition, s=settings: [(st.train, st.TrainCall(
            pairs=str(ctx.inputs[f"build/{c}"] / "pairs.jsonl"), model=s["model"], out=str(ctx.out_dir),
            config=s["config"], set=checks.sets(s["set"]), resume=(ctx.out_dir / "run.json").exists()))]),
        settings, [f"build/{condition}"],
        description=f"DPO on {condition}" + (f", seed {seed}" if len(seeds) > 1 else ""))


def _abs(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def _build_stage(exp: ExperimentConfig, condition: str, answer_spec: dict, rm_stage: str | None) -> Stage:
    deps = ["prompts"] + ([rm_stage] if rm_stage else [])
    settings: dict[str, Any] = {"condition": condition}
    flags: list[tuple[str, str, str | None]] = []  # (flag, spec, stage that holds it)

    def answer(name: str) -> tuple[str, str | None]:
        spec, stage = answer_spec[name]
        if stage:
            deps.append(stage)
        return spec, stage

    info = cond.CONDITIONS[condition]
    # The inputs in this order (the order of the stage's settings, hence of its cache key).
    for need in ("human", "target_greedy", "chosen", "target_samples", "pool"):
        if need not in info.needs:
            continue
        flag = "--" + need.replace("_", "-")
        if need == "human":
            flags.append((flag, exp.human, None))
        elif need in cond.GENERATION_OF_INPUT:
            stage = f"generate/self-{cond.GENERATION_OF_INPUT[need]}"
            flags.append((flag, "responses.jsonl", stage))
            deps.append(stage)
        else:  # chosen: the one answer of its role; pool: every answer of its roles
            flags += [(flag, *answer(name)) for name in cond.answer_names(info, exp.roles)]
    proxy = getattr(exp.roles, f"{info.proxy_role}_proxy") if info.proxy_role else None
    if proxy:  # absent when unset: earlier runs keep their cache keys
        settings["proxy"] = proxy
    settings["inputs"] = [(flag, spec, stage) for flag, spec, stage in flags]
    settings["rm"] = exp.reward_model
    if exp.max_pairs_per_prompt:  # absent when unset: earlier runs keep their cache keys
        settings["max_per_prompt"] = exp.max_pairs_per_prompt

    def run(ctx: StageContext) -> dict[str, Any]:
        # The library function itself; the log and summary.json record the command a user would type.
        from safepref.build import BuildConfig, build_set, command_for

        rm = f"offline:{ctx.inputs[rm_stage]}" if rm_stage else exp.reward_model
        config = BuildConfig(condition, str(ctx.out_dir), prompts=_prompts_file(ctx), rm=rm, tokenizer=exp.target,
                             max_per_prompt=exp.max_pairs_per_prompt, device=exp.device, proxy=settings.get("proxy"))
        for flag, spec, stage in settings["inputs"]:
            value, name = str(ctx.inputs[stage] / spec) if stage else spec, flag[2:].replace("-", "_")
            config.pool.append(value) if name == "pool" else setattr(config, name, value)
        return _library_stage(build_set, config, command_for(config))

    return Stage(f"build/{condition}", run, settings, sorted(set(deps)),
                 description=f"preference set {condition}")


def _audit_stage(exp: ExperimentConfig, trained: list[str]) -> Stage:
    from safepref.train.dpo import load_train_config

    # The audit probes the text DPO will train on: the training's prompt format and length limit.
    train = load_train_config(_abs(exp.train.config), [f"{k}={_yaml_scalar(v)}" for k, v in exp.train.set.items()])
    settings = {"model": exp.target, "representations": exp.audit.representations, "folds": exp.audit.folds,
                "bootstrap": exp.audit.bootstrap, "prompt_format": train.prompt_format,
                "max_length": train.max_length}

    def calls(ctx: StageContext) -> list:
        return [(st.audit, st.AuditCall(
            pairs=[str(ctx.inputs[f"build/{c}"] / "pairs.jsonl") for c in trained], name=list(trained),
            model=exp.target, representations=list(exp.audit.representations), out=str(ctx.out_dir),
            folds=exp.audit.folds, bootstrap=exp.audit.bootstrap, prompt_format=train.prompt_format,
            max_length=train.max_length, device=exp.device))]

    return Stage("audit", _calls_stage(calls), settings, [f"build/{c}" for c in trained],
                 description="separability of every preference set")


def _eval_stage(exp: ExperimentConfig, condition: str, seed: int, seeds: list[int]) -> Stage:
    evaluate = exp.evaluate
    jailbreak = cfg.to_dict(evaluate.jailbreak) if evaluate.jailbreak else None
    if jailbreak and not jailbreak["sets"]:
        del jailbreak["sets"]  # absent when unused: earlier runs keep their cache keys
    settings = {"model": exp.target if condition == "sft" else None, "jailbreak": jailbreak,
                "refusal": cfg.to_dict(evaluate.refusal) if evaluate.refusal else None,
                "general": cfg.to_dict(evaluate.general) if evaluate.general else None}
    train = seed_stage(f"train/{condition}", seed, seeds)
    deps = [] if condition == "sft" else [train]

    def calls(ctx: StageContext) -> list:
        model = exp.target if condition == "sft" else str(ctx.inputs[train])
        out: list = []
        if evaluate.jailbreak:
            jb = evaluate.jailbreak
            out += [(st.jailbreak, st.JailbreakCall(
                model=model, prompts=spec, out=str(ctx.out_dir / jailbreak_folder(spec, i == 0)),
                judges=list(jb.judges), set=checks.sets(jb.set), device=exp.device))
                for i, spec in enumerate([jb.prompts, *jb.sets])]
        if evaluate.refusal:
            rf = evaluate.refusal
            out.append((st.refusal, st.RefusalCall(model=model, safe_prompts=rf.safe, unsafe_prompts=rf.unsafe,
                                                   out=str(ctx.out_dir / "refusal"), set=checks.sets(rf.set),
                                                   device=exp.device)))
        if evaluate.general:
            gn = evaluate.general
            out.append((st.general, st.GeneralCall(
                model=model, tasks=gn.tasks, out=str(ctx.out_dir / "general"), device=exp.device,
                include_path=[str(Path(gn.include_path).resolve())] if gn.include_path else [], limit=gn.limit)))
        return out

    name = f"eval/{condition}" if condition == "sft" else seed_stage(f"eval/{condition}", seed, seeds)
    return Stage(name, _calls_stage(calls), settings, deps,
                 description=f"evaluate {'the starting model' if condition == 'sft' else condition}"
                             + (f", seed {seed}" if len(seeds) > 1 and condition != "sft" else ""))


def _report_stage(ctx: StageContext) -> dict[str, Any]:
    from safepref.report import write_report

    return write_report(ctx.out_dir.parent.parent, ctx.out_dir, conditions=ctx.config["conditions"],
                        name=ctx.config["name"], seeds=ctx.config.get("seeds"))


# ------------------------------------------------------------------------------------------------ entry


def run_experiment(path: str | Path, out: str | Path | None = None, overrides: list[str] | None = None,
                   dry_run: bool = False) -> list[dict[str, Any]] | dict[str, Any]:
    """Validate the experiment, then print the plan (dry run) or execute it. Returns the plan or results."""
    exp = load_experiment(path, overrides)
    run_dir = Path(out or Path("runs") / exp.name).resolve()
    stages = build_stages(exp, run_dir)
    rows = plan(stages, run_dir)  # also checks references and cycles
    if dry_run:
        return rows
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_dump = {"experiment": cfg.to_dict(exp), "config_file": str(Path(path).resolve()),
                "overrides": overrides or [], "data_root": os.environ.get("SAFEPREF_DATA")}
    from safepref.records import write_json

    write_json(run_dir / "experiment.json", cfg_dump)
    return execute(stages, run_dir)
