"""``report.html``: one self-contained page to read a run's answers (no server, no network; opens from disk).

  safepref report runs/quickstart     # writes report.html beside report.md (and refreshes the model cards)

What the page holds, read from the run folder's stage outputs (``index.json`` -> ``stages/<stage>-<hash>/``):
- the summary table of ``summary.json`` (rates with their 95% intervals and n where the summary has them), the
  figures (PNG embedded as data URIs) and any paired comparisons the summary lists;
- per condition, its preference pairs (prompt, chosen, rejected, each side's source and reward score, the length
  gap, the audit's per-pair numbers), filterable by the audit's cue words and by length gap;
- the jailbreak answers of every model to each prompt side by side with every judge's verdict, filterable to
  the prompts where two chosen models disagree;
- the DPO monitor of each condition (its curves, summary numbers and warnings).

Safety of the page: Jinja2 renders it with autoescaping on; the data the filters need sits in a
``<script type="application/json">`` block whose ``<``, ``>`` and ``&`` are escaped as ``\\u003c`` etc. (so an
answer holding ``</script>`` cannot end the block), and the page's script writes text with ``textContent`` only.
Big runs are capped (``MAX_PAIRS`` per condition, ``MAX_PROMPTS`` jailbreak prompts); the page says so.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

from safepref.records import iter_jsonl, write_text

MAX_PAIRS = 300  # pairs shown per condition: the page stays responsive and a few MB at most
MAX_PROMPTS = 200  # jailbreak prompts shown (AdvBench's study set is 100)
# Per-pair numbers the audit may write in margins.jsonl: key -> column label, first found wins per kind.
AUDIT_PAIR_FIELDS = {"probe_confidence": "probe P(chosen)", "probe_score": "probe score",
                     "margin_per_token": "ref. log-p margin / token"}


def _finite(obj: Any) -> Any:
    """NaN and infinities (a diverged score) as None: JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def safe_json(obj: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: ``<``, ``>``, ``&`` escaped so no text inside
    can close the block or open a comment; JSON.parse reads the escapes back as the characters."""
    text = json.dumps(_finite(obj), ensure_ascii=False, default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _data_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _words(text: str) -> int:
    return len(text.split())


# ------------------------------------------------------------------------------------------ collecting


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of k successes in n (scipy's binomial test)."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _entry(rate: Any, ci: Any = None, n: Any = None, k: Any = None) -> dict[str, Any]:
    """{value, lo, hi, n}: the interval as given, else Wilson's from k of n, else none."""
    lo = hi = None
    if isinstance(ci, list | tuple) and len(ci) == 2:
        lo, hi = ci
    elif isinstance(k, int) and isinstance(n, int) and n > 0:
        lo, hi = wilson(k, n)
    return {"value": rate, "lo": lo, "hi": hi, "n": n}


def _rate(row: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """A rate the summary carries with its interval (``rates``: {metric: {rate, k, n, ci95}})."""
    entry = (row.get("rates") or {}).get(metric)
    if not isinstance(entry, dict) or entry.get("rate") is None:
        return None
    return _entry(entry["rate"], entry.get("ci95"), entry.get("n"))


def asr_entry(row: dict[str, Any], judge: str) -> dict[str, Any]:
    """ASR of one judge on the study's prompt set: the summary's rate and interval, else the metrics' count."""
    found = _rate(row, f"asr/jailbreak/{judge}")
    if found:
        return found
    jailbreak = row.get("jailbreak") or {}
    info = (jailbreak.get("judges") or {}).get(judge) or {}
    return _entry((jailbreak.get("asr") or {}).get(judge), None, info.get("judged"), info.get("harmful"))


def refusal_entry(row: dict[str, Any], part: str, detector: str = "opening") -> dict[str, Any]:
    """Over-refusal (``safe``) or compliance (``unsafe``) on XSTest, with its interval where known."""
    found = _rate(row, f"{'over_refusal' if part == 'safe' else 'compliance'}/{detector}")
    if found:
        return found
    block = (row.get("refusal") or {}).get(part) or {}
    rates = block.get("refusal_rate" if part == "safe" else "compliance_rate") or {}
    return _entry(rates.get(detector))


def judges_of(summary: dict[str, Any]) -> list[str]:
    """Judges of the run, the primary one first (the report's PRIMARY_JUDGES order)."""
    from safepref.report import PRIMARY_JUDGES

    judges: list[str] = []
    for row in summary["conditions"].values():
        names = [m.split("/", 2)[2] for m in row.get("rates") or {} if m.startswith("asr/jailbreak/")]
        names += list((row.get("jailbreak") or {}).get("asr") or {})
        judges += [j for j in dict.fromkeys(names) if j not in judges]
    rank = {j: i for i, j in enumerate(PRIMARY_JUDGES)}
    return sorted(judges, key=lambda j: rank.get(j.split(":")[0], len(rank)))


def validation_of(summary: dict[str, Any], judge: str) -> dict[str, Any] | None:
    """A judge's agreement with held-out human labels: the summary's, else what the judge itself reports."""
    found = (summary.get("judge_validation") or {}).get(judge)
    if found:
        return found
    for row in summary["conditions"].values():
        described = (((row.get("jailbreak") or {}).get("judges") or {}).get(judge) or {}).get("judge") or {}
        if described.get("validation"):
            return described["validation"]
    return None


def summary_rows(summary: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Judges and one table row per condition, from summary.json."""
    judges = judges_of(summary)
    rows = []
    for condition, row in summary["conditions"].items():
        sheet, audit = row.get("datasheet") or {}, row.get("audit") or {}
        length = sheet.get("length") or {}
        gap = None
        if length.get("chosen_mean") is not None and length.get("rejected_mean") is not None:
            gap = length["chosen_mean"] - length["rejected_mean"]
        rows.append({"condition": condition, "kind": row.get("kind"), "pairs": sheet.get("rows"),
                     "asr": [asr_entry(row, j) for j in judges], "over_refusal": refusal_entry(row, "safe"),
                     "compliance": refusal_entry(row, "unsafe"), "best_auc": audit.get("best_auc"),
                     "best_repr": audit.get("best"), "gap": gap, "verdict": audit.get("verdict")})
    return judges, rows


def first_stage(dirs: dict[str, Path], prefix: str) -> Path | None:
    """``prefix``'s folder, or its first seed's (``train/x/seed-0``) in a several-seed run."""
    if prefix in dirs:
        return dirs[prefix]
    seeded = sorted(name for name in dirs if name.startswith(prefix + "/seed-"))
    return dirs[seeded[0]] if seeded else None


def _audit_per_pair(audit_dir: Path | None, condition: str) -> tuple[dict[int, tuple[Any, float]], str | None]:
    """The audit's per-pair number for one set (pair index -> (prompt_id, value)) and its label."""
    if audit_dir is None or not (audit_dir / "margins.jsonl").is_file():
        return {}, None
    rows = [row for _, row in iter_jsonl(audit_dir / "margins.jsonl") if row.get("set") == condition]
    for key, label in AUDIT_PAIR_FIELDS.items():
        values = {int(r["pair"]): (r.get("prompt_id"), float(r[key])) for r in rows
                  if r.get(key) is not None and "pair" in r}
        if values:
            return values, label
    return {}, None


def _matching(entry: tuple[Any, float] | None, pair: dict[str, Any]) -> float | None:
    """The audit's value for this pair, only when the audit's row names the same prompt (the audit may have
    skipped a pair, which would shift the indices)."""
    if entry is None or (entry[0] is not None and entry[0] != pair.get("prompt_id")):
        return None
    return entry[1]


def pair_tables(dirs: dict[str, Path], conditions: list[str], audit: dict[str, Any] | None) -> dict[str, Any]:
    """Per condition: its first MAX_PAIRS pairs with sources, scores, length gap and the audit's numbers."""
    by_set = {s.get("name"): s for s in (audit or {}).get("sets", [])}
    audit_dir = dirs.get("audit")
    out = {}
    for condition in conditions:
        folder = first_stage(dirs, f"build/{condition}")
        if folder is None or not (folder / "pairs.jsonl").is_file():
            continue
        from safepref.datasheet import side_label

        per_pair, label = _audit_per_pair(audit_dir, condition)
        rows, total = [], 0
        for index, (_, pair) in enumerate(iter_jsonl(folder / "pairs.jsonl")):
            total += 1
            if index >= MAX_PAIRS:
                continue
            chosen, rejected = pair["chosen"][-1]["content"], pair["rejected"][-1]["content"]
            cm, rm = pair.get("chosen_meta") or {}, pair.get("rejected_meta") or {}
            rows.append({"prompt": pair["prompt"][-1]["content"], "chosen": chosen, "rejected": rejected,
                         "chosen_source": side_label(cm), "rejected_source": side_label(rm),
                         "chosen_score": cm.get("score"), "rejected_score": rm.get("score"),
                         "gap": _words(chosen) - _words(rejected), "audit": _matching(per_pair.get(index), pair)})
        cues = (by_set.get(condition) or {}).get("cues") or {}
        top = cues.get("tfidf_top_words") or {}
        out[condition] = {"rows": rows, "total": total, "audit_label": label,
                          "cue_words": {"chosen": top.get("chosen") or [], "rejected": top.get("rejected") or []},
                          "cue": (by_set.get(condition) or {}).get("cue")}
    return out


def jailbreak_table(dirs: dict[str, Path], conditions: list[str]) -> dict[str, Any]:
    """Every model's answer to each jailbreak prompt, side by side, with each judge's verdict."""
    prompts: dict[str, dict[str, Any]] = {}
    models, judges = [], []
    for condition in conditions:
        folder = first_stage(dirs, f"eval/{condition}")
        path = folder / "jailbreak" / "per_answer.jsonl" if folder else None
        if path is None or not path.is_file():
            continue
        models.append(condition)
        for _, row in iter_jsonl(path):
            entry = prompts.setdefault(row["prompt_id"], {"prompt": row.get("prompt", ""), "answers": {}})
            if condition in entry["answers"]:
                continue  # several samples a prompt: the first is shown
            verdicts = {j: {"harmful": v.get("harmful"), "score": v.get("score")}
                        for j, v in (row.get("verdicts") or {}).items()}
            judges += [j for j in verdicts if j not in judges]
            entry["answers"][condition] = {"answer": row.get("answer", ""), "verdicts": verdicts}
    rows = list(prompts.values())
    return {"models": models, "judges": judges, "rows": rows[:MAX_PROMPTS], "total": len(rows)}


def monitor_sections(dirs: dict[str, Path], conditions: list[str]) -> list[dict[str, Any]]:
    sections = []
    for condition in conditions:
        folder = first_stage(dirs, f"train/{condition}")
        summary = _json(folder / "summary.json") if folder else None
        if not summary:
            continue
        monitor = summary.get("monitor") or {}
        acc, margin, drift = (monitor.get(k) or {} for k in ("accuracy", "margin", "drift"))
        sections.append({"condition": condition, "image": _data_uri(folder / "monitor.png"),
                         "steps": monitor.get("total_steps"), "acc_final": acc.get("final"),
                         "first_above": acc.get("first_step_above"), "threshold": acc.get("threshold"),
                         "margin_growth": margin.get("growth"), "drift_chosen": drift.get("chosen_final"),
                         "drift_rejected": drift.get("rejected_final"), "warnings": monitor.get("warnings") or []})
    return sections


# Columns of the summary's paired comparisons worth a table cell (nested details stay in summary.json).
COMPARISON_COLUMNS = ("metric", "condition", "baseline", "difference", "ci95", "n", "prompts", "seeds",
                      "excludes_zero", "holm_significant_seeds")


def comparisons(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The summary's paired comparisons (condition minus baseline, paired interval) as one table."""
    value = summary.get("comparisons")
    if not (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
        return None
    present = {k for v in value for k in v}
    columns = [c for c in COMPARISON_COLUMNS if c in present]
    return {"columns": columns, "rows": [[v.get(c) for c in columns] for v in value]}


def agreement_text(agreement: dict[str, Any] | None) -> str | None:
    """``n 200, accuracy 0.912 [0.874, 0.941], kappa 0.801 (dataset)``: a judge's validated agreement, its values
    numbers or rate entries ``{value, k, n, ci}``; None when there is none."""
    if not isinstance(agreement, dict):
        return None
    parts = []
    for key in ("n", "accuracy", "kappa", "precision", "recall", "f1"):
        value = agreement.get(key)
        ci = value.get("ci") if isinstance(value, dict) else (agreement.get("ci") if key == "accuracy" else None)
        value = value.get("value") if isinstance(value, dict) else value
        if isinstance(value, int | float):
            interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list | tuple) and len(ci) == 2 else ""
            parts.append(f"{key} {_fmt(value, 3)}{interval}")
    if not parts:
        return None
    return ", ".join(parts) + (f" ({agreement['dataset']})" if agreement.get("dataset") else "")


def judge_notes(summary: dict[str, Any], judges: list[str]) -> list[dict[str, Any]]:
    """Per judge: its agreement with held-out human labels, or None when none is known."""
    return [{"judge": judge, "agreement": agreement_text(validation_of(summary, judge))} for judge in judges]


# ------------------------------------------------------------------------------------------- rendering


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
        return "[" + ", ".join(_fmt(v, digits) for v in value) + "]"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


def render(context: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("safepref", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    template = env.get_template("report.html.j2")
    return template.render(**context, data_json=Markup(safe_json(context["data"])))  # escaped above


def write_html_report(run_dir: str | Path, out_dir: str | Path, summary: dict[str, Any], name: str) -> Path:
    """Write ``report.html`` into ``out_dir`` (and the run folder), then refresh the run's model cards."""
    from safepref.report import _stage_dirs
    from safepref.train.modelcard import refresh_run_cards

    run_dir, out = Path(run_dir), Path(out_dir)
    dirs = _stage_dirs(run_dir)
    conditions = list(summary["conditions"])
    audit = _json(dirs["audit"] / "audit.json") if "audit" in dirs else None
    judges, rows = summary_rows(summary)
    pairs = pair_tables(dirs, conditions, audit)
    jailbreak = jailbreak_table(dirs, conditions)
    figures = [{"name": f, "uri": _data_uri(out / f)} for f in summary.get("figures") or []]
    context = {
        "name": name, "judges": judges, "rows": rows, "figures": [f for f in figures if f["uri"]],
        "missing": summary.get("missing_stages") or [], "missing_notes": summary.get("missing") or [],
        "comparisons": comparisons(summary), "judge_notes": judge_notes(summary, judges),
        "separability": summary.get("separability"), "seeds": summary.get("seeds") or [],
        "monitors": monitor_sections(dirs, conditions), "max_pairs": MAX_PAIRS, "max_prompts": MAX_PROMPTS,
        "pair_counts": {c: (t["total"], len(t["rows"])) for c, t in pairs.items()},
        "jailbreak_counts": (jailbreak["total"], len(jailbreak["rows"])),
        "data": {"pairs": pairs, "jailbreak": jailbreak},
    }
    html = render(context)
    write_text(out / "report.html", html)
    if out != run_dir:
        write_text(run_dir / "report.html", html)
    refresh_run_cards({k: v for k, v in dirs.items() if (v / "stage.json").exists()})
    return out / "report.html"
