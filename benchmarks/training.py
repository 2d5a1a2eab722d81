"""DPO training speed: TRL's ``DPOTrainer`` with its defaults (the baseline) against safepref's training path.

    python benchmarks/training.py --tiny                       # CPU, seconds: the tiny Llama, 3 steps
    python benchmarks/training.py --out docs/benchmarks/training-h200.json   # GPU: SmolLM2-135M, Llama-3.2-1B

Same synthetic pairs, same seed, same random weights (``random:<arch>``, built on the device), same process.
For each shape and each of full fine-tuning and LoRA it trains

- ``baseline``: ``DPOConfig`` defaults as a user would leave them (bf16 autocast, gradient checkpointing on, a
  reference copy scored every step, batch 8); only the learning rate, its schedule, max_steps, max_length, seed
  and logging are set, none of which changes the speed. Weights float32 (a LoRA base too), as ``from_config``.
- ``safepref``: safepref's path (``safepref.train.dpo_setup``: ``_dpo_args``, ``_load_causal_lm``,
  ``_peft_config``, the monitored trainer class) with the options that keep the loss curve: no gradient
  checkpointing, reference log-probs precomputed once in batches of 64 (full fine-tuning; LoRA's reference is the
  base with the adapter off), LoRA's frozen base in bf16; same batch, same data order.
- ``safepref+liger`` (GPU with liger-kernel importable): the same plus Liger's RMSNorm/SwiGLU/RoPE kernels
  (``use_liger_kernel``; TRL already computes log-probs chunked, without materialising the logits).
- ``safepref-bs<N>`` (``--big-batch N``): the safepref path with N pairs a step: a different batch, so its loss
  curve is not compared.

Pairs per second: steady rate of the timed steps (after ``--warmup`` steps), and end to end: the pairs over the
time of the precompute pass plus those pairs at the steady rate (the ratios use this one). Peak memory:
``torch.cuda.max_memory_allocated`` from building the models to the end of training. The loss of each of the
first steps must agree with the baseline's within ``|a - b| <= atol + rtol * |b|``. The JSON is rewritten after
every run, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

SHAPES = {"smollm2-135m": "random:smollm2-135m", "llama-3.2-1b": "random:llama-3.2-1b"}
TINY_SHAPES = {"tiny-llama": "random:tiny-llama"}
# The learning rates of configs/train/dpo-smollm2-{full,lora}.yaml, given to both sides.
LEARNING_RATES = {"full": 5e-6, "lora": 5e-5}
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
NOTES = """Variants (benchmarks/training.py says more):
- baseline: TRL `DPOTrainer` + `DPOConfig` defaults (bf16 autocast, gradient checkpointing, a float32 reference
  copy scored every step, batch 8, fused AdamW); float32 weights, LoRA base too. Only learning rate (constant),
  max_steps, max_length, seed and logging are set.
- safepref: configs/train/dpo-smollm2-{full,lora}.yaml through safepref.train.dpo_setup (no gradient
  checkpointing, reference log-probs precomputed once, length-grouped batches, LoRA base in bf16), same batch,
  learning rate and steps. One epoch over steps x batch pairs, so the grouping sorts within only
  n // (4 x batch) batches here (transformers' LengthGroupedSampler): it understates grouping on a real set.
- safepref-same-order: the same without length grouping: the baseline's batches, so its per-step losses are
  compared with the baseline's.
- safepref-bsN: N pairs a step (a different batch: loss not compared). safepref+liger: same-order + Liger's
  RMSNorm/SwiGLU/RoPE kernels (TRL already computes log-probs chunked, without the full logits).
- pairs/s counts the reference precompute pass; "steady x" is the training loop alone. TRL's one-off sha256 of
  all weights (its precompute cache key, seconds for a 1B float32 model) is replaced by a random key: not timed."""
LN2 = 0.6931471805599453
WORDS = ("the model answer safe request harmful policy refuse explain help user data step because "
         "which could should never always people risk law guide example first second then finally").split()


@dataclass
class Plan:
    shapes: dict[str, str]
    modes: list[str]
    steps: int = 10
    warmup: int = 3
    batch: int = 8
    big_batch: int = 0
    max_length: int = 512
    words: tuple[int, int, int, int] = (20, 60, 40, 260)  # prompt min/max, answer min/max (words)
    seed: int = 42
    atol: float = 0.01
    rtol: float = 0.02
    compare_steps: int = 5
    precompute_batch: int = 64
    liger: bool = True
    deadline_s: float = 1e9
    tiny: bool = False
    only: list[str] | None = None  # run only these variants


# ------------------------------------------------------------------------------------------------ pure parts


def synthetic_pairs(n: int, seed: int, words: tuple[int, int, int, int]) -> list[Any]:
    """``n`` chat pairs of random words; chosen and rejected of independent random lengths (seeded)."""
    from safepref.records import PreferencePair

    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    p_lo, p_hi, a_lo, a_hi = words
    return [PreferencePair(prompt=[{"role": "user", "content": f"{i}: " + text(p_lo, p_hi)}],
                           chosen=[{"role": "assistant", "content": text(a_lo, a_hi)}],
                           rejected=[{"role": "assistant", "content": text(a_lo, a_hi)}])
            for i in range(n)]


def loss_agreement(baseline: list[float], other: list[float], steps: int, atol: float, rtol: float
                   ) -> dict[str, Any]:
    """Do the first ``steps`` losses agree, each within ``atol + rtol * |baseline|``?

    ``informative_steps``: baseline losses after the first (ln 2 by construction: policy == reference) that are
    more than ``atol`` away from both ln 2 and 0. A curve that never leaves ln 2 or falls to 0 at once agrees
    with anything that does the same: with none, the check says nothing (``agree`` is still reported)."""
    n = min(steps, len(baseline), len(other))
    diffs = [abs(a - b) for a, b in zip(other[:n], baseline[:n], strict=True)]
    limits = [atol + rtol * abs(b) for b in baseline[:n]]
    informative = sum(1 for b in baseline[1:n] if atol < b < LN2 - atol)
    return {"steps": n, "atol": atol, "rtol": rtol, "max_abs_diff": round(max(diffs), 6) if diffs else None,
            "informative_steps": informative,
            "agree": bool(n) and all(d <= lim for d, lim in zip(diffs, limits, strict=True))}


def end_to_end_rate(pairs: int, steady: float | None, precompute_s: float) -> float | None:
    """Pairs per second counting the precompute pass: ``pairs / (precompute_s + pairs / steady)``."""
    if not steady:
        return None
    return pairs / (precompute_s + pairs / steady)


def compare(base: dict[str, Any], other: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """``other`` against the baseline of the same shape and mode: speed and memory ratios, loss agreement."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    same_batch = other["batch"] == base["batch"]
    loss = (loss_agreement(base["losses"], other["losses"], plan.compare_steps, plan.atol, plan.rtol)
            if same_batch else None)
    speed = ratio(other["pairs_per_s"], base["pairs_per_s"])
    memory = ratio(other["peak_gib"], base["peak_gib"])
    return {"shape": base["shape"], "mode": base["mode"], "variant": other["variant"],
            "speedup": speed, "speedup_steady": ratio(other["pairs_per_s_steady"], base["pairs_per_s_steady"]),
            "memory_ratio": memory, "loss": loss,
            "goal_2x": speed is not None and speed >= 2.0,
            "goal_memory": memory is not None and memory <= 1.0,
            "goal_loss": None if loss is None or not loss["informative_steps"] else loss["agree"]}


# ---------------------------------------------------------------------------------------------- training


class _Clock:
    """Trainer callback: wall time at the end of every step (after a device sync) and the logged losses."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.losses: list[float] = []

    def hook(self) -> Any:
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003
                _sync()
                clock.times.append(time.perf_counter())

            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN003
                if logs and "loss" in logs:
                    clock.losses.append(float(logs["loss"]))

        return Callback()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(cls: type) -> type:
    """The trainer class with its reference precompute pass timed (``precompute_s``)."""
    class Timed(cls):  # type: ignore[misc, valid-type]
        precompute_s = 0.0

        def _precompute_ref_logps(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            out = super()._precompute_ref_logps(*args, **kwargs)
            _sync()
            self.precompute_s += time.perf_counter() - start
            return out

    return Timed


def _skip_weight_hash() -> None:
    """TRL keys its reference-pass cache by a sha256 of every weight, copied to the CPU (seconds for a 1B float32
    model, once per training run, not per pair). Here each call gets a fresh key instead: no device time spent on
    it, and no run can read an earlier run's cached pass (same pairs, same seeded weights) and look faster."""
    import uuid

    from trl.trainer import dpo_trainer

    dpo_trainer.hash_module = lambda module: uuid.uuid4().hex


def _device() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def baseline_trainer(location: str, mode: str, plan: Plan, dataset: Any, tokenizer: Any, out: str,
                     callback: Any, batch: int) -> Any:
    """TRL's DPOTrainer as a user sets it up: DPOConfig defaults, float32 weights, a reference copy."""
    import torch
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from safepref import random_models

    policy = random_models.build(location, _device(), torch.float32)
    ref = random_models.build(location, _device(), torch.float32) if mode == "full" else None
    args = DPOConfig(output_dir=out, learning_rate=LEARNING_RATES[mode], lr_scheduler_type="constant",
                     max_steps=plan.steps, max_length=plan.max_length, per_device_train_batch_size=batch,
                     seed=plan.seed, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
                     **({} if torch.cuda.is_available() else {"bf16": False}))  # CPU: no bf16 autocast
    peft = (LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                       target_modules="all-linear", task_type="CAUSAL_LM") if mode == "lora" else None)
    return _timed(DPOTrainer)(model=policy, ref_model=ref, args=args, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=peft, callbacks=[callback])


def safepref_config(mode: str, plan: Plan, batch: int, same_order: bool) -> Any:
    """configs/train/dpo-smollm2-<mode>.yaml (the options safepref ships) with the benchmark's batch, steps,
    learning rate and schedule; ``same_order`` switches length grouping off (the baseline's data order)."""
    import torch

    from safepref.train.dpo_config import DPOTrainConfig, load_train_config

    # A CPU: float32 on both sides (the baseline's DPOConfig cannot autocast bf16 there), so the losses compare.
    precision = [] if torch.cuda.is_available() else ["precision=fp32"]
    overrides = [*precision, f"max_steps={plan.steps}", f"per_device_train_batch_size={batch}",
                 f"learning_rate={LEARNING_RATES[mode]}", "lr_scheduler_type=constant", "warmup_ratio=0.0",
                 f"max_length={plan.max_length}", "save_steps=0", f"seed={plan.seed}", "monitor.probe_pairs=0",
                 "gradient_accumulation_steps=1"]
    if same_order and "group_by_length" in DPOTrainConfig.__dataclass_fields__:
        overrides.append("group_by_length=false")
    return load_train_config(ROOT / "configs" / "train" / f"dpo-smollm2-{mode}.yaml", overrides)


def safepref_trainer(location: str, mode: str, plan: Plan, dataset: Any, tokenizer: Any, out: str,
                     callback: Any, batch: int, same_order: bool = False, liger: bool = False) -> Any:
    """safepref's training path (dpo_setup's TRL objects, built as train_dpo builds them) from its configs."""
    from safepref.train import dpo_setup as setup

    config = safepref_config(mode, plan, batch, same_order)
    precision = setup._precision(config)
    args = setup._dpo_args(config, Path(out), precision)
    args.disable_tqdm = True
    if liger:
        args.use_liger_kernel = True
    dtype = setup._model_dtype(config, precision)
    policy = setup._load_causal_lm(location, dtype, False)
    ref = None
    if mode == "full" and not config.precompute_ref_log_probs:
        ref = setup._load_causal_lm(location, dtype, False)
    grouped = bool(getattr(config, "group_by_length", False))
    cls = setup._trainer_class(grouped) if grouped else setup._trainer_class()
    return _timed(cls)(model=policy, ref_model=ref, args=args, train_dataset=dataset, processing_class=tokenizer,
                       peft_config=setup._peft_config(config), callbacks=[callback])


def run_one(shape: str, location: str, mode: str, variant: str, plan: Plan, pairs: list[Any],
            tokenizer: Any) -> dict[str, Any]:
    """Build, train ``plan.steps`` steps, measure; the models are freed before returning."""
    import torch

    from safepref.train.dpo_data import _to_dataset

    batch = plan.big_batch if variant.startswith("safepref-bs") else plan.batch
    same_order = variant in ("safepref-same-order", "safepref+liger")
    grouped = variant != "baseline" and bool(getattr(safepref_config(mode, plan, batch, same_order),
                                                     "group_by_length", False))
    dataset = _to_dataset(pairs[:plan.steps * batch], tokenizer, "chat")
    clock = _Clock()
    cuda = torch.cuda.is_available()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    held = torch.cuda.memory_allocated() / 2**30 if cuda else None  # left by earlier runs (should be ~0)
    torch.manual_seed(plan.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        if variant == "baseline":
            trainer = baseline_trainer(location, mode, plan, dataset, tokenizer, out, clock.hook(), batch)
        else:
            trainer = safepref_trainer(location, mode, plan, dataset, tokenizer, out, clock.hook(), batch,
                                       same_order=same_order, liger=variant.endswith("+liger"))
        setup_s = time.perf_counter() - start
        trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    precompute_s = trainer.precompute_s
    del trainer
    gc.collect()
    timed = clock.times[plan.warmup:] if len(clock.times) > plan.warmup + 1 else clock.times
    seconds = timed[-1] - timed[0] if len(timed) > 1 else 0.0
    steady = (len(timed) - 1) * batch / seconds if seconds > 0 else None
    pairs_n = plan.steps * batch
    rate = end_to_end_rate(pairs_n, steady, precompute_s)
    return {"shape": shape, "model": location, "mode": mode, "variant": variant, "batch": batch,
            "grouped_by_length": grouped, "same_order": not grouped,
            "steps": len(clock.times), "timed_steps": max(len(timed) - 1, 0), "setup_s": round(setup_s, 2),
            "precompute_s": round(precompute_s, 3), "step_s": round(seconds / (len(timed) - 1), 4) if seconds else None,
            "pairs_per_s_steady": _round(steady), "pairs_per_s": _round(rate),
            "peak_gib": round(peak, 3) if peak is not None else None,
            "held_before_gib": round(held, 3) if held is not None else None, "losses": [round(x, 6) for x in clock.losses]}


def _round(x: float | None) -> float | None:
    return round(x, 2) if x is not None else None


# ------------------------------------------------------------------------------------------- orchestration


def variants_for(plan: Plan, cuda: bool) -> tuple[list[str], list[str]]:
    """(first pass: every shape and mode, then second pass: extras if time is left)."""
    extras = [f"safepref-bs{plan.big_batch}"] if plan.big_batch else []
    if plan.liger and cuda and _importable("liger_kernel"):
        extras.append("safepref+liger")
    return ["baseline", "safepref", "safepref-same-order"], extras


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def comparisons(results: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """Every measured variant against the baseline of its shape and mode (same run, same device)."""
    out = []
    for base in (r for r in results if r["variant"] == "baseline" and "error" not in r):
        for other in results:
            if (other["shape"], other["mode"]) == (base["shape"], base["mode"]) and other is not base \
                    and "error" not in other:
                row = compare(base, other, plan)
                if not other.get("same_order", False):  # another data order: per-step losses differ by design
                    row["loss"], row["goal_loss"] = None, None
                out.append(row)
    return out


def environment() -> dict[str, Any]:
    import torch

    from safepref.train.dpo_setup import versions

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info = versions()
    info["liger_kernel"] = _version("liger-kernel")
    return {"device": gpu or f"cpu ({os.cpu_count()} cores)", "python": platform.python_version(),
            "versions": info, "host": platform.node()}


def _version(name: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "absent"


def write_outputs(report: dict[str, Any], json_path: Path, md_path: Path | None) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, json_path)  # a run killed mid-write keeps the previous complete file
    if md_path is not None:
        md_path.write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    """A short table of the comparisons (the JSON holds every number and the loss curves)."""
    plan = report["plan"]
    lines = [f"# DPO training: safepref's path vs TRL `DPOTrainer` defaults ({report['env']['device']})", "",
             f"Command: `{report['command']}`  ",
             f"Steps {plan['steps']} (first {plan['warmup']} not timed), batch {plan['batch']} pairs, "
             f"max_length {plan['max_length']}, seed {plan['seed']}; random weights (`random:<arch>`). "
             f"Loss agreement: each of the first {plan['compare_steps']} steps within "
             f"{plan['atol']} + {plan['rtol']} x |baseline|.", "",
             "| shape | mode | variant | pairs/s | x baseline | steady x | peak GiB | memory x | loss agrees |",
             "|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r["shape"], r["mode"], r["variant"]): r for r in report["results"]}
    for c in report["comparisons"]:
        r = by_key[(c["shape"], c["mode"], c["variant"])]
        loss = _loss_cell(c["loss"])
        lines.append(f"| {c['shape']} | {c['mode']} | {c['variant']} | {r['pairs_per_s']} | {c['speedup']} | "
                     f"{c['speedup_steady']} | {r['peak_gib']} | {c['memory_ratio']} | {loss} |")
    for r in report["results"]:
        if r["variant"] == "baseline" and "error" not in r:
            lines.append(f"\nBaseline {r['shape']} {r['mode']}: {r['pairs_per_s']} pairs/s, {r['peak_gib']} GiB.")
    for r in report["results"]:
        if "error" in r:
            lines.append(f"\n{r['shape']} {r['mode']} {r['variant']}: failed: {r['error']}")
    if report.get("skipped"):
        lines.append(f"\nNot run (out of time): {', '.join(report['skipped'])}")
    return "\n".join(lines + ["", NOTES]) + "\n"


def _loss_cell(loss: dict[str, Any] | None) -> str:
    if loss is None:
        return "n/a (other order or batch)"
    verdict = "yes" if loss["agree"] else "NO"
    if not loss.get("informative_steps"):
        return f"says nothing: flat or saturated curve ({verdict}, max {loss['max_abs_diff']})"
    return f"{verdict} (max {loss['max_abs_diff']}, {loss['informative_steps']} informative steps)"


def rereport(source: Path, json_path: Path, md_path: Path) -> dict[str, Any]:
    """Comparisons and Markdown computed again from a report's measured rows (nothing is trained)."""
    report = json.loads(source.read_text())
    plan = Plan(**{**report["plan"], "words": tuple(report["plan"]["words"])})
    report["comparisons"] = comparisons(report["results"], plan)
    report["rereported"] = f"comparisons recomputed from {source.name} by this version of benchmarks/training.py"
    write_outputs(report, json_path, md_path)
    return report


def run_plan(plan: Plan, json_path: Path, md_path: Path | None, command: str) -> dict[str, Any]:
    """Every shape x mode x variant; the report is written after each run."""
    import torch

    from safepref import models

    started = time.perf_counter()
    _skip_weight_hash()
    first, extras = variants_for(plan, torch.cuda.is_available())
    most = max(plan.batch, plan.big_batch)
    pairs = synthetic_pairs(plan.steps * most, plan.seed, plan.words)
    report: dict[str, Any] = {"benchmark": "training", "command": command, "env": environment(),
                              "plan": asdict(plan), "results": [], "comparisons": [], "skipped": [],
                              "complete": False}
    jobs = [(s, m, v) for s in plan.shapes for m in plan.modes for v in first]
    jobs += [(s, m, v) for v in extras for s in plan.shapes for m in plan.modes]  # extras: one kind at a time
    if plan.only:
        jobs = [job for job in jobs if job[2] in plan.only]
    for shape, mode, variant in jobs:
        name = f"{shape}/{mode}/{variant}"
        if time.perf_counter() - started > plan.deadline_s:
            report["skipped"].append(name)
            continue
        location = models.resolve_model(plan.shapes[shape])
        tokenizer = models.load_tokenizer(plan.shapes[shape], padding_side="right")
        try:
            row = run_one(shape, location, mode, variant, plan, pairs, tokenizer)
        except Exception as exc:  # one failing variant (a kernel, memory) must not lose the others
            row = {"shape": shape, "mode": mode, "variant": variant, "error": f"{type(exc).__name__}: {exc}"[:400]}
        report["results"].append(row)
        report["comparisons"] = comparisons(report["results"], plan)
        report["seconds"] = round(time.perf_counter() - started, 1)
        write_outputs(report, json_path, md_path)
        print(f"[{report['seconds']:7.1f}s] {name}: " + json.dumps({k: row.get(k) for k in (
            "pairs_per_s", "pairs_per_s_steady", "peak_gib", "precompute_s", "setup_s", "error")}), flush=True)
    report["complete"] = not report["skipped"]
    write_outputs(report, json_path, md_path)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: the tiny Llama, 3 steps, batch 2")
    parser.add_argument("--shapes", default=None, help=f"comma list of {', '.join(SHAPES)}")
    parser.add_argument("--modes", default="full,lora")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--big-batch", type=int, default=None, help="extra variant with N pairs a step (0: off)")
    parser.add_argument("--no-liger", action="store_true")
    parser.add_argument("--variants", default=None, help="comma list: only these (e.g. baseline,safepref)")
    parser.add_argument("--tiny-model", default=TINY_SHAPES["tiny-llama"], help="model spec of the --tiny shape")
    parser.add_argument("--deadline", type=float, default=1e9, help="start no run after this many seconds")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "training.json"))
    parser.add_argument("--md", default=None, help="Markdown path (default: --out with .md)")
    parser.add_argument("--rereport", default=None, help="a report JSON: recompute its comparisons, train nothing")
    args = parser.parse_args(argv)
    if args.rereport:
        out = Path(args.out)
        print(markdown(rereport(Path(args.rereport), out, Path(args.md) if args.md else out.with_suffix(".md"))))
        return 0
    shapes = {"tiny-llama": args.tiny_model} if args.tiny else SHAPES
    if args.shapes:
        shapes = {k: v for k, v in {**SHAPES, **TINY_SHAPES}.items() if k in args.shapes.split(",")}
    plan = Plan(shapes=shapes, modes=args.modes.split(","), tiny=args.tiny, liger=not args.no_liger,
                deadline_s=args.deadline, only=args.variants.split(",") if args.variants else None)
    if args.tiny:  # seconds on a 2-core CPU
        plan.steps, plan.warmup, plan.batch, plan.big_batch, plan.max_length = 3, 1, 2, 0, 128
        plan.words, plan.compare_steps, plan.precompute_batch = (3, 10, 5, 40), 3, 4
    plan.steps = args.steps or plan.steps
    plan.warmup = args.warmup if args.warmup is not None else plan.warmup
    plan.big_batch = args.big_batch if args.big_batch is not None else plan.big_batch
    out = Path(args.out)
    md = Path(args.md) if args.md else out.with_suffix(".md")
    command = "python benchmarks/training.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = run_plan(plan, out, md, command.strip())
    print(markdown(report))
    failed = [r for r in report["results"] if "error" in r]
    return 1 if failed and len(failed) == len(report["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
