"""Rehearse an experiment at its real shapes with random weights, and say what the full run will cost.

    safepref run configs/paper/llama-2-7b.yaml --rehearse 16              # writes runs/<name>-rehearsal/
    SAFEPREF_REHEARSE_BUDGET_S=150 safepref run configs/paper/llama-3.1-8b.yaml --rehearse 16 --out /tmp/r8b

Throughput and memory do not depend on weight values. The rehearsal turns the experiment into one that runs
offline at the same shapes (``rehearsal_plan``):

- the target and every hub model become their random twins (``random:<arch>``, ``safepref.random_models``);
  an API model (GPT-4o answers) becomes the target's twin (its GPU time is not counted: the API's requests are);
- the hub reward model becomes a random model of its shape (``hf:random:deberta-v3-large``), the GPT-4o rubric
  judge is dropped (its requests are counted), hub data sources become the offline PKU set of the same kind;
- ``prompts.limit`` becomes N, the evaluation sets their first N prompts; lm-eval's general tasks are not
  rehearsed (lm-eval and its hub datasets are not available offline);
- generation, batch sizes, the DPO config (full or LoRA), the judges that run locally stay as configured, and
  random models always generate ``max_new_tokens`` (so a timing reflects the configured lengths).

Then it runs the stages of that experiment with the same commands as ``safepref run`` (``pipeline.build_stages``)
and measures each: wall time, model-loading time, the stage's own work time (generation loop, training loop),
peak GPU memory. Every condition's preference set is built; DPO and its evaluation run for one representative
condition only, because every condition trains and evaluates with the same code at the same settings (they
differ by their number of pairs, which the estimate scales). DPO is rehearsed as configured and, for full
fine-tuning, also with a precomputed reference and with LoRA, so an out-of-memory answer comes with the
setting that fits. A stage that runs out of GPU memory (``torch.OutOfMemoryError``) or fails is recorded and
the rehearsal goes on. ``SAFEPREF_REHEARSE_BUDGET_S``: start no new stage after that many seconds;
``SAFEPREF_REHEARSE_STAGES``: a stage folder several rehearsals share (a stage of the same settings and inputs
is measured once).

``rehearsal.json`` and ``rehearsal.md`` (``safepref.rehearse_estimate``) hold the measurements and the estimate
of the full study (prompts, pairs, epochs, conditions, seeds) in GPU-hours on this GPU. A rerun reuses the
stages already measured in the same folder.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safepref import config as cfg
from safepref import random_models
from safepref.errors import ConfigError, DataError, SafeprefError
from safepref.graph import Stage, StageContext, order
from safepref.records import iter_jsonl, read_json, write_json

BUDGET_ENV = "SAFEPREF_REHEARSE_BUDGET_S"
SHARED_ENV = "SAFEPREF_REHEARSE_STAGES"  # a stage folder shared by several rehearsals (default: <out>/)
MEASURE_FILE = "rehearsal-stage.json"
OFFLINE_PKU = "pku-realign"  # the offline PKU-SafeRLHF pairs: prompts and human answers of the same kind
RM_STAND_IN = "deberta-v3-large"  # shape of the study's reward model, for a hub RM without a known twin
# Conditions whose sets need only the target's answers and the human pairs: the representative DPO run is
# one of them, so that it does not wait for other models' answers.
REPRESENTATIVE = ("self-rm", "hc-self", "original")


@dataclass
class Plan:
    """What ``rehearsal_plan`` decided: the rehearsal experiment, what it replaced, the full run's sizes."""

    experiment: Any  # pipeline.ExperimentConfig of the rehearsal
    substitutions: list[dict[str, str]] = field(default_factory=list)
    full: dict[str, Any] = field(default_factory=dict)
    api: dict[str, str] = field(default_factory=dict)  # answer name -> API model, for answers made by an API


# ----------------------------------------------------------------------------------------------- the plan


def twin_spec(model: str, tokenizer: str | None = None) -> str | None:
    """``random:<arch>`` for a hub id with a known twin (or a random spec as it is), else None."""
    if random_models.is_random_spec(model):
        return model
    arch = random_models.twin_of(model)
    if arch is None:
        return None
    return f"random:{arch}" + (f"?tokenizer={tokenizer}" if tokenizer else "")


def _limited(spec: str, n: int) -> tuple[str, int | None]:
    """``advbench:100`` -> (``advbench:<min(n, 100)>``, 100); a source name without a count -> (name:n, None)."""
    from safepref.sources import SOURCES

    name, _, count = spec.partition(":")
    if name not in SOURCES or (count and not count.isdigit()):
        return spec, None  # a file or an unusual spec: rehearsed whole
    full = int(count) if count else None
    return f"{name}:{min(n, full) if full else n}", full


def _hub_only(spec: str | None) -> bool:
    from safepref.sources import SOURCES

    if not spec or "=" in spec:
        return False
    name = spec.split(":", 1)[0]
    return name in SOURCES and getattr(SOURCES[name], "path", None) is None


def rehearsal_plan(exp: Any, n: int) -> Plan:
    """The offline, N-prompt twin of experiment ``exp`` (see the module docstring). Raises ConfigError when the
    target has no known random twin (set ``target: random:<arch>`` with ``--set``)."""
    from safepref.pipeline import ExperimentConfig

    if n < 2:
        raise ConfigError("--rehearse needs at least 2 prompts")
    data = cfg.to_dict(exp)
    plan = Plan(None)
    sub = plan.substitutions
    target = twin_spec(exp.target)
    if target is None:
        known = ", ".join(random_models.architectures())
        raise ConfigError(f"no random twin is known for target '{exp.target}': rehearse with "
                          f"--set target=random:<arch> (known: {known})")
    tokenizer = target.partition("?tokenizer=")[2] or None
    if target != exp.target:
        sub.append({"what": "target", "real": exp.target, "rehearsal": target, "why": "random twin"})
    data["target"] = target
    for key, where in (("source", data["prompts"]), ("human", data)):
        if _hub_only(where[key]):
            sub.append({"what": key if key == "human" else "prompts.source", "real": where[key],
                        "rehearsal": OFFLINE_PKU, "why": "hub data: the offline PKU-SafeRLHF pairs stand in"})
            where[key] = OFFLINE_PKU
    plan.full["prompts"] = exp.prompts.limit
    data["prompts"]["limit"] = n
    for name, answer in data["answers"].items():
        _plan_answer(plan, name, answer, target, tokenizer)
    data["reward_model"] = _plan_reward_model(plan, exp.reward_model, tokenizer)
    _plan_evaluation(plan, data["evaluate"], n)
    _plan_saving(plan, data["train"])
    plan.full["seeds"] = len(exp.run_seeds()) if hasattr(exp, "run_seeds") else 1
    if data.get("seeds"):
        data["seed"], data["seeds"] = data["seeds"][0], None
    plan.experiment = cfg.from_dict(ExperimentConfig, data)
    return plan


def _plan_saving(plan: Plan, train: dict[str, Any]) -> None:
    """No resumable checkpoints and bfloat16 saved weights: at 7B a full fine-tuning checkpoint holds float32
    weights and Adam's two moments (12 B a parameter, 83 GB; the 2026-12-06 H200 rehearsal filled the 64 GB disk
    with one), and a float32 model is 27.5 GB. What the stage costs in GPU time does not depend on either."""
    for key, value in (("save_steps", 0), ("save_dtype", "bfloat16")):
        real = train["set"].get(key, "as in the train config")
        train["set"] = {**train["set"], key: value}
        plan.substitutions.append({"what": f"train.{key}", "real": real, "rehearsal": value,
                                   "why": "the disk: a 7B checkpoint with optimizer state is 83 GB"})


def _plan_answer(plan: Plan, name: str, answer: dict[str, Any], target: str, tokenizer: str | None) -> None:
    model = answer.get("model")
    if not model:
        return
    what = f"answers.{name}"
    if answer.get("backend") == "openai":
        plan.api[name] = model
        # sampled, so that its answers never equal the target's greedy ones (a random model's greedy text may)
        answer.update(model=target, backend=_local_backend(), base_url=None,
                      set={**answer.get("set", {}), "do_sample": True})
        plan.substitutions.append({"what": what, "real": f"{model} (API)",
                                   "rehearsal": f"{target} ({answer['backend']}, sampled)",
                                   "why": "API: its GPU time is not counted, its requests are"})
        return
    twin = twin_spec(model, tokenizer)
    if twin is None:
        twin = target
        why = "no twin known for this id: the target's twin stands in (shape differs)"
    else:
        why = "random twin"
    if twin != model:
        answer["model"] = twin
        plan.substitutions.append({"what": what, "real": model, "rehearsal": twin, "why": why})


def _local_backend() -> str:
    try:
        import torch

        return "fast" if torch.cuda.is_available() else "hf"
    except ImportError:
        return "hf"


def _plan_reward_model(plan: Plan, spec: str, tokenizer: str | None) -> str:
    kind, _, target = spec.partition(":")
    if kind != "hf" or random_models.is_random_spec(target) or Path(target).expanduser().exists():
        return spec
    twin = twin_spec(target, tokenizer) or f"random:{RM_STAND_IN}" + (f"?tokenizer={tokenizer}" if tokenizer else "")
    plan.substitutions.append({"what": "reward_model", "real": spec, "rehearsal": f"hf:{twin}",
                               "why": "hub reward model: a random model of the same shape (same cost)"})
    return f"hf:{twin}"


def _plan_evaluation(plan: Plan, evaluate: dict[str, Any], n: int) -> None:
    jailbreak = evaluate.get("jailbreak")
    if jailbreak:
        jailbreak["prompts"], plan.full["jailbreak"] = _limited(jailbreak["prompts"], n)
        plan.full["jailbreak_spec"] = jailbreak["prompts"].split(":")[0]
        if "sets" in jailbreak:
            jailbreak["sets"] = [_limited(spec, n)[0] for spec in jailbreak["sets"]]
        api_judges = [j for j in jailbreak["judges"] if j.split(":")[0] in ("rubric", "llm")]
        if api_judges:
            jailbreak["judges"] = [j for j in jailbreak["judges"] if j not in api_judges] or ["keyword"]
            plan.full["api_judges"] = api_judges
            plan.substitutions.append({"what": "evaluate.jailbreak.judges", "real": ", ".join(api_judges),
                                       "rehearsal": "(not run)", "why": "API judge: its requests are counted"})
    refusal = evaluate.get("refusal")
    if refusal:
        for key in ("safe", "unsafe"):
            refusal[key], plan.full[f"refusal_{key}"] = _limited(refusal[key], n)
    if evaluate.get("general"):
        plan.full["general"] = evaluate["general"]["tasks"]
        evaluate["general"] = None
        plan.substitutions.append({"what": "evaluate.general", "real": plan.full["general"],
                                   "rehearsal": "(not run)",
                                   "why": "lm-eval and its hub datasets are not available offline; not estimated"})


# -------------------------------------------------------------------------------------------- the stages


def _train_variants(exp: Any) -> list[tuple[str, dict[str, Any]]]:
    """(label, changes to the experiment's ``train`` section): as configured, then the settings that fit."""
    from safepref.train.dpo import load_train_config

    config = load_train_config(exp.train.config, [f"{k}={v}" for k, v in exp.train.set.items()])
    variants: list[tuple[str, dict[str, Any]]] = [("as configured", {})]
    if config.finetune == "full":
        if not config.precompute_ref_log_probs:
            variants.append(("full, precomputed reference", {"set": {**exp.train.set,
                                                                     "precompute_ref_log_probs": True}}))
        lora = Path(exp.train.config).with_name("dpo-paper-lora.yaml") if exp.train.config else None
        if lora is not None and lora.exists():
            # unmerged: merging a 7B base on the CPU and saving 15 GB would cost the rehearsal a minute or two
            variants.append((f"LoRA ({lora.name}, adapter unmerged)",
                             {"config": str(lora), "set": {**exp.train.set, "merge_lora": False}}))
    return variants


def rehearsal_stages(exp: Any, run_dir: Path) -> tuple[list[Stage], dict[str, str], str | None]:
    """The stages to run, in the order to run them, with their cache keys, and the representative condition.

    Everything up to the preference sets and the audit runs as ``safepref run`` would; DPO runs for the
    representative condition in every variant (``train@<label>/<condition>``), evaluation for the starting
    model and that condition.
    """
    from safepref.pipeline import build_stages

    stages = order(build_stages(exp, run_dir))
    trained = [c for c in exp.conditions if c != "sft"]
    rep = next((c for c in REPRESENTATIVE if c in trained), trained[0] if trained else None)
    keys = _keys(stages)
    keep = [s for s in stages if not s.name.startswith(("train/", "eval/", "report"))]
    variants: list[Stage] = []
    for label, changes in _train_variants(exp) if rep else []:
        variant_exp = cfg.from_dict(type(exp), cfg.deep_merge(cfg.to_dict(exp), {"train": changes}))
        stage = next(s for s in build_stages(variant_exp, run_dir) if s.name == f"train/{rep}")
        name = f"train@{label}/{rep}"
        variants.append(Stage(name, stage.run, stage.config, stage.deps, stage.description))
        keys[name] = cfg.config_hash(name, stage.config, [keys[d] for d in stage.deps])
    evals = [s for s in stages if s.name in ("eval/sft", f"eval/{rep}")]
    for stage in evals:
        keys[stage.name] = cfg.config_hash(stage.name, stage.config, [])

    def rank(stage: Stage) -> int:
        name = stage.name
        # what the estimate needs most comes first: DPO, then the other models' answers (the study's largest
        # generation cost), then evaluation; a budget that runs out skips the tail
        table = {"prompts": 0, "generate/self-greedy": 1, "generate/self-sample": 2, "rm/train": 3,
                 f"build/{rep}": 4, "eval/sft": 7, f"eval/{rep}": 9, "audit": 10}
        if name in table:
            return table[name]
        return 5 if name.startswith("train@") else 6 if name.startswith("generate/") else 8

    ranked = sorted(keep + variants + evals, key=rank)  # sorted() is stable: graph order within a rank
    return ranked, keys, rep


def _keys(stages: list[Stage]) -> dict[str, str]:
    from safepref.graph import stage_keys

    return stage_keys(stages)


# ------------------------------------------------------------------------------------------- measuring


def _gpu() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _free_memory() -> None:
    gc.collect()
    torch = _gpu()
    if torch is not None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """Run one stage and return its measurement: status (ok, oom, error), wall, load and peak GPU memory.

    An out-of-memory error or any failure of the stage is caught and recorded (one line), so the rehearsal goes
    on; Ctrl-C is not.
    """
    import torch

    _free_memory()
    builds = len(random_models.BUILD_SECONDS)
    started = time.time()
    record: dict[str, Any] = {"stage": stage.name, "status": "ok"}
    tail = _Tail(sys.stderr)
    try:
        with contextlib.redirect_stderr(tail):
            record["summary"] = stage.run(ctx) or {}
    except torch.OutOfMemoryError as exc:
        record.update(status="oom", error=_one_line(exc))
    except (SafeprefError, Exception) as exc:  # noqa: BLE001 - a failed stage is a finding, not the end
        # a stage command reports its own error on stderr ("safepref build: error: ..."): that line says why
        said = [line for line in tail.lines if ": error: " in line]
        record.update(status="error", error=said[-1][:400] if said else _one_line(exc))
    if record["status"] != "ok" and stage.name.startswith("train"):
        recovered = training_from_metrics(ctx.out_dir)
        if recovered:
            record["summary"] = recovered
    record["wall_s"] = round(time.time() - started, 2)
    record["load_s"] = round(sum(random_models.BUILD_SECONDS[builds:]), 2)
    gpu = _gpu()
    if gpu is not None:
        record["peak_gib"] = round(gpu.cuda.max_memory_allocated() / 2**30, 2)
        record["peak_reserved_gib"] = round(gpu.cuda.max_memory_reserved() / 2**30, 2)
    _free_memory()
    if gpu is not None:  # memory a stage left behind would shrink the next one's room: make a leak visible
        record["allocated_after_gib"] = round(gpu.cuda.memory_allocated() / 2**30, 2)
    return record


def training_from_metrics(folder: Path) -> dict[str, Any] | None:
    """What a DPO stage that failed after training (at its checkpoint, say) had measured, from the
    ``metrics.jsonl`` and ``run.json`` it wrote: its steps this run, global batch and seconds. None when it logged
    no step of this run."""
    try:
        rows = [row for _, row in iter_jsonl(folder / "metrics.jsonl")]
        run = read_json(folder / "run.json")
    except DataError:
        return None
    # rows restored from a checkpoint carry no elapsed_s (MetricsWriter): the steps before this run
    timed = [r for r in rows if "step" in r and r.get("elapsed_s")]
    if not timed:
        return None
    start = max((int(r["step"]) for r in rows if "step" in r and not r.get("elapsed_s")), default=0)
    config = run.get("config") or {}
    batch = (config.get("per_device_train_batch_size") or 1) * (config.get("gradient_accumulation_steps") or 1) \
        * (run.get("world_size") or 1)
    steps = int(timed[-1]["step"]) - start
    return {"training": {"steps": steps, "global_batch": batch, "train_seconds": float(timed[-1]["elapsed_s"])},
            "pairs": {"trained": steps * batch}, "recovered_from": "metrics.jsonl: the stage failed after these steps"}


class _Tail(io.TextIOBase):
    """stderr passed through, its last lines kept."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.lines = stream, collections.deque(maxlen=50)

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.lines.extend(line for line in text.splitlines() if line.strip())
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400] if text else ''}"


def _run_stages(stages: list[Stage], keys: dict[str, str], rep: str | None, run_dir: Path,
                budget_s: float | None, log: Any) -> dict[str, dict[str, Any]]:
    """Measure ``stages`` in order; reuse measurements already in the run folder; skip what cannot run."""
    from safepref.graph import stage_dir

    started = time.time()
    # Several rehearsals may share one stage folder: a stage with the same settings and inputs (a peer's answers
    # in two paper configs) is measured once.
    root = Path(os.environ.get(SHARED_ENV) or run_dir)
    done: dict[str, Path] = {}
    results: dict[str, dict[str, Any]] = {}
    for number, stage in enumerate(stages, start=1):
        prefix = f"[rehearse {number}/{len(stages)}] {stage.name}"
        inputs = _inputs(stage, done, rep)
        if inputs is None:
            results[stage.name] = {"stage": stage.name, "status": "skipped",
                                   "error": "an input stage did not finish: " + ", ".join(stage.deps)}
            log(f"{prefix}: skipped (an input stage did not finish)")
            continue
        key = keys[stage.name] if not stage.name.startswith("eval/") else cfg.config_hash(
            stage.name, stage.config, [str(p) for p in inputs.values()])
        folder = stage_dir(root, stage.name.replace("@", "-").replace(" ", "_").replace(",", ""), key)
        measured = folder / MEASURE_FILE
        if measured.exists():
            record = json.loads(measured.read_text())
            record["reused"] = True
            log(f"{prefix}: measured before ({record['status']}, {record.get('wall_s')} s)")
        elif budget_s is not None and time.time() - started > budget_s:
            record = {"stage": stage.name, "status": "skipped", "error": f"rehearsal budget of {budget_s:.0f} s spent"}
            log(f"{prefix}: skipped (budget spent)")
        else:
            log(f"{prefix}: running - {stage.description}")
            folder.mkdir(parents=True, exist_ok=True)
            record = measure(stage, StageContext(folder, inputs, stage.config))
            record.update(folder=os.path.relpath(folder, run_dir), config=stage.config)
            write_json(measured, record)
            log(f"{prefix}: {record['status']} in {record['wall_s']} s"
                + (f", peak {record['peak_gib']} GiB" if "peak_gib" in record else "")
                + (f" ({record['error']})" if record.get("error") else ""))
        results[stage.name] = record
        if record["status"] == "ok":
            done[stage.name] = folder
    return results


def _inputs(stage: Stage, done: dict[str, Path], rep: str | None) -> dict[str, Path] | None:
    """Input folders of ``stage``; ``train/<rep>`` is the first DPO variant that finished. None: one is missing."""
    inputs = {}
    for dep in stage.deps:
        if dep in done:
            inputs[dep] = done[dep]
            continue
        variant = next((folder for name, folder in done.items()
                        if name.startswith("train@") and dep.startswith(f"train/{rep}")), None)
        if variant is None:
            return None
        inputs[dep] = variant
    return inputs


# ------------------------------------------------------------------------------------------------ entry


def rehearse_experiment(path: str | Path, n: int, out: str | Path | None = None,
                        overrides: list[str] | None = None, budget_s: float | None = None,
                        log: Any = print, dry_run: bool = False) -> dict[str, Any]:
    """Rehearse experiment ``path`` on ``n`` prompts into ``out``; returns what rehearsal.json holds.

    ``dry_run``: print the stand-ins and the stages in the order they would run; run nothing, write nothing.
    """
    from safepref import rehearse_estimate
    from safepref.pipeline import load_experiment

    exp = load_experiment(path, overrides)
    if budget_s is None and os.environ.get(BUDGET_ENV):
        budget_s = float(os.environ[BUDGET_ENV])
    plan = rehearsal_plan(exp, n)
    run_dir = Path(out or Path("runs") / f"{exp.name}-rehearsal").resolve()
    stages, keys, rep = rehearsal_stages(plan.experiment, run_dir)
    log(f"rehearsing {exp.name} on {n} prompts with random weights ({len(stages)} stages) in {run_dir}")
    for row in plan.substitutions:
        log(f"  {row['what']}: {row['real']} -> {row['rehearsal']} ({row['why']})")
    if dry_run:
        for number, stage in enumerate(stages, start=1):
            log(f"  {number:>2}. {stage.name}  {stage.description}")
        return {"experiment": exp.name, "stages": [s.name for s in stages], "substitutions": plan.substitutions}
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = _run_stages(stages, keys, rep, run_dir, budget_s, log)
    _drop_weights(Path(os.environ.get(SHARED_ENV) or run_dir))
    report = rehearse_estimate.estimate(exp, plan, results, rep, n)
    report.update(config_file=str(Path(path).resolve()), overrides=overrides or [], prompts=n,
                  seconds=round(time.time() - started, 1), machine=_machine(), budget_s=budget_s)
    write_json(run_dir / "rehearsal.json", report)
    rehearse_estimate.write_markdown(report, run_dir / "rehearsal.md")
    log(f"wrote {run_dir / 'rehearsal.md'}")
    return report


def _drop_weights(run_dir: Path) -> None:
    """Delete the weights the rehearsal's DPO stages saved (random, worthless, 15 GB each at 7B), keeping their
    summaries: two 7B rehearsals would otherwise fill a 64 GB disk."""
    for folder in (run_dir / "stages").glob("train-*"):
        for weights in folder.rglob("*.safetensors"):
            weights.unlink()


def _machine() -> dict[str, Any]:
    import platform

    from safepref.train.dpo import versions

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "versions": versions()}
    gpu = _gpu()
    if gpu is not None:
        props = gpu.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_count=gpu.cuda.device_count(), gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info
