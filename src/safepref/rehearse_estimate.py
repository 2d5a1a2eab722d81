"""The full study's cost from a rehearsal's measurements (``safepref.rehearse``): rehearsal.json and rehearsal.md.

Each measured stage's wall time is split into a fixed part (loading models, setting up, saving) and a work part
(the generation loop, the training loop; for other stages all but model building). The full run's time of a
stage is the fixed part plus the work part scaled to the full run's size:

- generation: by prompts (upper bound) and by batches (lower bound). With N prompts below the backend's batch
  (``fast``: 512 prompts a call, ``hf``: 8), the rehearsal decoded smaller batches than the full run will; a
  decoding step of a bigger batch costs more, but not proportionally more, so the truth lies between the two.
  Rehearse with N at least the batch size to close the gap;
- preference sets: by prompts; audit: by pairs; DPO: by pairs x epochs at the measured pairs/s, per condition
  (its pairs per prompt as in the rehearsal) and seed; evaluation: by prompts, per condition and seed, with the
  same batch bounds as generation.

Everything is wall-clock time holding one GPU ("GPU-hours on this GPU"); stages that ran out of memory, failed
or were not rehearsed are listed apart, never counted as zero.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from safepref.records import write_text

DEFAULT_BATCH = {"fast": 512, "hf": 8}  # prompts a call when the config leaves batch_size unset
FAST_MAX_ROWS = 2048  # the fast backend decodes at most this many prompts x samples rows together


def _batch(backend: str, samples: int, configured: int | None) -> int:
    batch = configured or DEFAULT_BATCH.get(backend, 8)
    return max(1, min(batch, FAST_MAX_ROWS // samples)) if backend == "fast" else batch


def _generation(record: dict[str, Any]) -> dict[str, Any]:
    """Rates of a generation stage: rows x max_new_tokens tokens (random twins always write them all)."""
    summary = record.get("summary", {})
    settings = summary.get("generation", {})
    backend = summary.get("backend", {}).get("backend", "hf")
    prompts, samples = summary.get("prompts", 0), settings.get("num_samples", 1)
    tokens = prompts * samples * settings.get("max_new_tokens", 0)
    work = summary.get("seconds_this_run") or max(record["wall_s"] - record["load_s"], 1e-9)
    configured = (record.get("config", {}).get("set") or {}).get("batch_size")
    return {"items": prompts, "unit": "prompts", "work_s": work, "fixed_s": max(record["wall_s"] - work, 0.0),
            "rate": round(tokens / work, 1) if work else None, "rate_unit": "new tokens/s", "backend": backend,
            "samples": samples, "max_new_tokens": settings.get("max_new_tokens"),
            "batch": _batch(backend, samples, configured)}


def _training(record: dict[str, Any]) -> dict[str, Any]:
    summary = record.get("summary", {})
    training, pairs = summary.get("training", {}), summary.get("pairs", {})
    work = training.get("train_seconds") or 0.0
    processed = min(training.get("steps", 0) * training.get("global_batch", 0),
                    math.ceil(pairs.get("trained", 0) * (training.get("epochs") or 1)))
    return {"items": processed, "unit": "pairs", "work_s": work, "fixed_s": max(record["wall_s"] - work, 0.0),
            "rate": round(processed / work, 2) if work else None, "rate_unit": "pairs/s",
            "global_batch": training.get("global_batch"), "finetune": None}


def _plain(record: dict[str, Any], items: int, unit: str) -> dict[str, Any]:
    work = max(record["wall_s"] - record["load_s"], 1e-9)
    return {"items": items, "unit": unit, "work_s": work, "fixed_s": record["load_s"],
            "rate": round(items / work, 2) if items else None, "rate_unit": f"{unit}/s"}


def _count(spec: str | None, known: int | None, fallback: int) -> tuple[int, bool]:
    """Prompts in the full run's set ``spec``: its count, else counted offline; (count, exact)."""
    if known:
        return known, True
    if not spec:
        return fallback, False
    try:
        from safepref.sources import load_prompts

        return len(load_prompts(spec)[0]), True
    except Exception:  # noqa: BLE001 - a hub-only set: say the count is unknown
        return fallback, False


def _scaled(work: dict[str, Any], full_items: float, full_batches: float | None = None,
            rehearsed_batches: float | None = None) -> tuple[float, float]:
    """(low, high) seconds of the full run's stage: fixed + work scaled by batches (low) and by items (high)."""
    high = work["fixed_s"] + work["work_s"] * full_items / max(work["items"], 1)
    if full_batches is None or not rehearsed_batches:
        return high, high
    low = work["fixed_s"] + work["work_s"] * full_batches / rehearsed_batches
    return min(low, high), high


def estimate(exp: Any, plan: Any, results: dict[str, dict[str, Any]], rep: str | None, n: int) -> dict[str, Any]:
    """Measurements per rehearsed stage and the full study's estimate per stage and in total (rehearsal.json)."""
    prompts_rec = results.get("prompts", {})
    n_prompts = prompts_rec.get("summary", {}).get("prompts") or n
    full_prompts = plan.full.get("prompts") or prompts_rec.get("summary", {}).get("candidates") or n_prompts
    eval_sizes = _eval_sizes(plan, results, rep, n)
    for name, record in results.items():
        if name.startswith("eval/"):
            record["eval_prompts"] = sum(eval_sizes["rehearsed"].values())
    measured = {name: _measure_row(name, rec, results, n_prompts) for name, rec in results.items()}
    pairs = {name.split("/", 1)[1]: rec.get("summary", {}).get("pairs", 0)
             for name, rec in results.items() if name.startswith("build/") and rec["status"] == "ok"}
    train_name = _chosen_training(results, rep)
    context = {"n_prompts": n_prompts, "full_prompts": full_prompts, "pairs": pairs, "train": train_name,
               "eval": eval_sizes}
    stages = _full_stages(exp)
    rows = [_full_row(stage, exp, plan, results, measured, context) for stage in stages]
    variants = _variants(results, measured)
    for variant in variants:  # DPO of every condition and seed, had this variant been the one configured
        name = next(n for n in results if n.startswith(f"train@{variant['variant']}/"))
        if results[name]["status"] == "ok":
            timed = [_full_row(s, exp, plan, results, measured, {**context, "train": name})
                     for s in stages if _kind(s) == "train"]
            variant["dpo_gpu_hours"] = round(sum(r["high_s"] for r in timed) / 3600, 2)
    counted = [r for r in rows if r["low_s"] is not None]
    total = {"low_gpu_hours": round(sum(r["low_s"] for r in counted) / 3600, 2),
             "high_gpu_hours": round(sum(r["high_s"] for r in counted) / 3600, 2),
             "stages": len(rows), "stages_estimated": len(counted),
             "not_estimated": [f"{r['stage']}: {r['note']}" for r in rows if r["low_s"] is None]}
    if plan.full.get("general"):
        total["not_estimated"].append(f"general capability (lm-eval tasks '{plan.full['general']}') in every "
                                      "eval stage: not rehearsed offline")
    api = {name: {"model": model, "requests": full_prompts} for name, model in plan.api.items()}
    if plan.full.get("api_judges"):
        evals = sum(1 for r in rows if r["kind"] == "eval")
        api["judges"] = {"model": ", ".join(plan.full["api_judges"]),
                         "requests": context["eval"]["full_jailbreak"] * evals}
    return {"experiment": exp.name, "random_weights": True, "representative_condition": rep,
            "substitutions": plan.substitutions, "full": {**plan.full, "prompts": full_prompts},
            "measured": measured, "training_variants": variants, "estimate": rows,
            "total": total, "api_requests": api,
            "pairs_per_prompt": {c: round(p / n_prompts, 3) for c, p in pairs.items()}}


def _measure_row(name: str, record: dict[str, Any], results: dict[str, dict[str, Any]],
                 n_prompts: int) -> dict[str, Any]:
    row = {k: record.get(k) for k in ("status", "wall_s", "load_s", "peak_gib", "peak_reserved_gib", "error",
                                      "reused", "folder")}
    if record["status"] != "ok":
        if name.startswith("train") and (record.get("summary") or {}).get("recovered_from"):
            row.update(_training(record))  # the rate of the steps it trained before it failed
        return row
    if name.startswith("generate/"):
        row.update(_generation(record))
    elif name.startswith("train"):
        row.update(_training(record))
    elif name.startswith("build/"):
        row.update(_plain(record, n_prompts, "prompts"))
    elif name == "audit":
        total = sum(r.get("summary", {}).get("pairs", 0) for k, r in results.items() if k.startswith("build/"))
        row.update(_plain(record, total, "pairs"))
    elif name.startswith("eval/"):
        row.update(_plain(record, record.get("eval_prompts", 0), "prompts"))
    else:
        row.update(_plain(record, n_prompts, "prompts"))
    for key in ("work_s", "fixed_s"):
        if key in row:
            row[key] = round(row[key], 2)
    return row


def _chosen_training(results: dict[str, dict[str, Any]], rep: str | None) -> str | None:
    """The DPO variant the estimate uses: as configured when it ran, else the first variant that did."""
    names = [n for n in results if n.startswith("train@")]
    ok = [n for n in names if results[n]["status"] == "ok"]
    return ok[0] if ok else None


def _variants(results: dict[str, dict[str, Any]], measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, record in results.items():
        if name.startswith("train@"):
            label = name.split("@", 1)[1].rsplit("/", 1)[0]
            row = measured[name]
            rows.append({"variant": label, "status": record["status"], "pairs_per_s": row.get("rate"),
                         "peak_gib": row.get("peak_gib"), "wall_s": row.get("wall_s"), "error": row.get("error")})
    for i, row in enumerate(rows):  # an out-of-memory variant: the next one that fitted is its fix
        fits = next((r["variant"] for r in rows[i + 1:] if r["status"] == "ok"), None)
        if row["status"] == "oom":
            row["fix"] = f"{fits} (measured: fits)" if fits else \
                "none of the rehearsed variants fits: shard over several GPUs (configs/accelerate/fsdp.yaml)"
    return rows


def _eval_sizes(plan: Any, results: dict[str, dict[str, Any]], rep: str | None, n: int) -> dict[str, Any]:
    full = plan.full
    jailbreak, exact_jb = _count(full.get("jailbreak_spec"), full.get("jailbreak"), n)
    safe, exact_safe = _count("xstest-safe", full.get("refusal_safe"), n)
    unsafe, exact_unsafe = _count("xstest-unsafe", full.get("refusal_unsafe"), n)
    sets = {"jailbreak": jailbreak, "refusal_safe": safe, "refusal_unsafe": unsafe}
    if not plan.experiment.evaluate.refusal:
        sets.pop("refusal_safe"), sets.pop("refusal_unsafe")
    if not plan.experiment.evaluate.jailbreak:
        sets.pop("jailbreak")
    return {"full": sets, "rehearsed": {k: min(v, n) for k, v in sets.items()}, "full_jailbreak": jailbreak,
            "exact": exact_jb and exact_safe and exact_unsafe}


def _full_stages(exp: Any) -> list[str]:
    from safepref.pipeline import build_stages

    return [s.name for s in build_stages(exp, Path("/nonexistent-run"))]


def _kind(stage: str) -> str:
    return stage.split("/", 1)[0] if "/" in stage else stage


def _full_row(stage: str, exp: Any, plan: Any, results: dict[str, dict[str, Any]],
              measured: dict[str, dict[str, Any]], ctx: dict[str, Any]) -> dict[str, Any]:
    """One stage of the full run: (low, high) seconds, or None with the reason it is not estimated."""
    kind = _kind(stage)
    row: dict[str, Any] = {"stage": stage, "kind": kind, "low_s": None, "high_s": None, "note": ""}
    source = {"train": ctx["train"], "eval": _eval_source(results, stage)}.get(kind, stage)
    if kind == "report":
        row.update(low_s=0.0, high_s=0.0, note="seconds (CPU)")
        return row
    record = results.get(source) if source else None
    if record is None or record["status"] != "ok":
        row["note"] = _why_missing(stage, kind, record, results, plan)
        return row
    work = measured[source]
    row["from"] = source
    full_prompts, n_prompts = ctx["full_prompts"], ctx["n_prompts"]
    if kind == "generate":
        name = stage.split("/", 1)[1]
        if name in plan.api:
            row.update(low_s=0.0, high_s=0.0, note=f"API ({plan.api[name]}): {full_prompts} requests, no GPU")
            return row
        b = work["batch"]
        low, high = _scaled(work, full_prompts, math.ceil(full_prompts / b), math.ceil(work["items"] / b))
        row["note"] = f"{full_prompts} prompts x {work['samples']} x {work['max_new_tokens']} tokens"
    elif kind == "train":
        condition = stage.split("/")[1]
        per_prompt = ctx["pairs"].get(condition, ctx["pairs"].get(results[source]["stage"].rsplit("/", 1)[1], 0))
        epochs = results[source].get("summary", {}).get("training", {}).get("epochs") or 1
        full_pairs = per_prompt / max(n_prompts, 1) * full_prompts
        low, high = _scaled(work, full_pairs * epochs)
        row["note"] = f"{full_pairs:.0f} pairs x {epochs:g} epochs at {work['rate']} pairs/s ({source})"
    elif kind == "eval":
        sizes = ctx["eval"]
        batch = DEFAULT_BATCH["fast"] if _fast_default() else DEFAULT_BATCH["hf"]
        full_b = sum(math.ceil(v / batch) for v in sizes["full"].values())
        reh_b = sum(math.ceil(v / batch) for v in sizes["rehearsed"].values())
        low, high = _scaled(work, sum(sizes["full"].values()), full_b, reh_b)
        row["note"] = ", ".join(f"{k} {v}" for k, v in sizes["full"].items()) + f" prompts ({source})"
    elif kind == "audit":
        total_pairs = sum(ctx["pairs"].values()) / max(n_prompts, 1) * full_prompts
        low, high = _scaled(work, total_pairs)
        row["note"] = f"{total_pairs:.0f} pairs"
    elif kind in ("prompts", "rm"):
        low = high = record["wall_s"]
        row["note"] = "as rehearsed"
    else:
        low, high = _scaled(work, full_prompts)
        row["note"] = f"{full_prompts} prompts"
    row.update(low_s=round(low, 1), high_s=round(high, 1))
    return row


def _fast_default() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _eval_source(results: dict[str, dict[str, Any]], stage: str) -> str | None:
    """The evaluation measured for ``stage``: a trained condition's when it ran, else the starting model's."""
    trained = [n for n in results if n.startswith("eval/") and n != "eval/sft" and results[n]["status"] == "ok"]
    if stage.startswith("eval/sft"):
        return "eval/sft" if "eval/sft" in results else (trained[0] if trained else None)
    return trained[0] if trained else ("eval/sft" if "eval/sft" in results else None)


def _why_missing(stage: str, kind: str, record: dict[str, Any] | None, results: dict[str, dict[str, Any]],
                 plan: Any) -> str:
    if kind == "train":
        failed = [f"{n.split('@', 1)[1]}: {r['status']}" for n, r in results.items() if n.startswith("train@")]
        return "no DPO variant fitted (" + "; ".join(failed) + ")" if failed else "DPO not rehearsed"
    if record is None:
        return "not rehearsed"
    return f"{record['status']}: {record.get('error', '')}"[:300] + _fix(stage, kind, record)


def _fix(stage: str, kind: str, record: dict[str, Any]) -> str:
    """The setting that fixes an out-of-memory stage (or '' for other failures)."""
    if record["status"] != "oom":
        return ""
    if "weights alone" in record.get("error", ""):
        return (" -> does not fit one GPU: generate these answers on a multi-GPU server (e.g. tensor-parallel "
                "vLLM) and give them as a file (answers.<name>: {source: answers.jsonl})")
    fixes = {"generate": "set a smaller batch_size for this generation (or the fast backend's max_rows)",
             "build": "a smaller reward-model batch",
             "eval": "set a smaller batch_size in evaluate.*.set",
             "audit": "fewer representations (drop hidden:auto) or the audit on a CPU"}
    return " -> " + fixes.get(kind, "a smaller batch")


# ----------------------------------------------------------------------------------------------- markdown


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("-" if v is None else str(v) for v in row) + " |" for row in rows]
    return lines


def write_markdown(report: dict[str, Any], path: str | Path) -> None:
    """rehearsal.md: what was replaced, what was measured, what the full study costs."""
    machine = report["machine"]
    where = f"{machine.get('gpu_count', 0)} x {machine['gpu']}" if machine.get("gpu") else \
        f"CPU ({machine.get('cpu_count')} cores), no GPU"
    total = report["total"]
    lines = [f"# Rehearsal of `{report['experiment']}` on {report['prompts']} prompts",
             "", "**Random weights: every model here is a randomly initialised twin of the real architecture. "
             "The timings and memory are real; the answers, scores and rates they produced mean nothing.**", "",
             f"Machine: {where}. Config: `{report['config_file']}`"
             + (f" with {' '.join(report['overrides'])}" if report["overrides"] else "")
             + f". Rehearsal time {report['seconds']} s."
             + (f" Budget {report['budget_s']:.0f} s (stages past it were skipped)." if report.get("budget_s") else ""),
             "", "## Full study estimate", "",
             f"**{total['low_gpu_hours']}–{total['high_gpu_hours']} "
             + ("GPU-hours on this GPU" if machine.get("gpu") else "hours on this CPU") + "** for "
             f"{total['stages_estimated']} of {total['stages']} stages "
             f"({report['full']['prompts']} prompts, {report['full'].get('seeds', 1)} seed(s)). "
             "Low: generation scaled by batches; high: by prompts (see rehearse_estimate's docstring).", ""]
    if total["not_estimated"]:
        lines += ["Not in the total:", ""] + [f"- {item}" for item in total["not_estimated"]] + [""]
    for name, api in report["api_requests"].items():
        lines.append(f"- API `{name}` ({api['model']}): {api['requests']} requests, no GPU time.")
    lines += ["", *_by_kind(report["estimate"]), "", "## DPO variants (representative condition "
              f"`{report['representative_condition']}`)", ""]
    lines += _table(["variant", "status", "pairs/s", "peak GiB", "wall s", "DPO GPU-h, full study", "fix / error"],
                    [[v["variant"], v["status"], v["pairs_per_s"], v["peak_gib"], v["wall_s"], v.get("dpo_gpu_hours"),
                      " ".join(x for x in (v.get("fix"), v["error"]) if x) or None]
                     for v in report["training_variants"]])
    lines += ["", "## Measured stages", ""]
    lines += _table(["stage", "status", "wall s", "load s", "work s", "items", "rate", "batch", "peak GiB"],
                    [[name, m["status"], m.get("wall_s"), m.get("load_s"), m.get("work_s"),
                      f"{m['items']} {m['unit']}" if "items" in m else None,
                      f"{m['rate']} {m['rate_unit']}" if m.get("rate") else None, m.get("batch"), m.get("peak_gib")]
                     for name, m in report["measured"].items()])
    failed = [(n, m) for n, m in report["measured"].items() if m.get("error")]
    if failed:
        lines += ["", "Failures:", ""] + [f"- `{n}`: {m['error']}" for n, m in failed]
    lines += ["", "## Stand-ins", ""]
    lines += _table(["field", "real run", "rehearsal", "why"],
                    [[s["what"], f"`{s['real']}`", f"`{s['rehearsal']}`", s["why"]] for s in report["substitutions"]])
    lines += ["", "## Full run, stage by stage", ""]
    lines += _table(["stage", "low h", "high h", "basis"],
                    [[r["stage"], _hours(r["low_s"]), _hours(r["high_s"]), r["note"]] for r in report["estimate"]])
    write_text(Path(path), "\n".join(lines) + "\n")


def _by_kind(rows: list[dict[str, Any]]) -> list[str]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        kinds.setdefault(row["kind"], []).append(row)
    table = []
    for kind, items in kinds.items():
        counted = [r for r in items if r["low_s"] is not None]
        low = sum(r["low_s"] for r in counted) if counted else None
        high = sum(r["high_s"] for r in counted) if counted else None
        table.append([kind, len(items), len(counted), _hours(low), _hours(high)])
    return _table(["stage kind", "stages", "estimated", "low GPU-h", "high GPU-h"], table)
