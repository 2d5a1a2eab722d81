"""The study's report for one run folder: ``report.md``, PNG figures and ``summary.json`` with every number.

  safepref report runs/quickstart          # (re)write the report of a run; `safepref run` calls this last

Reads the stage outputs listed in ``<run>/index.json`` (written by ``safepref run``): datasheets of the
built sets, the audit, DPO metrics and summaries, jailbreak / over-refusal / general evaluations. Anything a
run did not produce is reported as missing rather than guessed.

Figures:
- ``asr.png``: attack success rate per condition in the study's style (SFT first; multi-model conditions,
  human pairs and self-generated pairs coloured apart), one bar group per judge;
- ``refusal.png``: over-refusal on safe prompts beside ASR;
- ``separability_vs_asr.png``: audit AUC of each set against the ASR after DPO on it;
- ``reward_accuracy.png``: DPO reward accuracy per step, one curve per condition;
- ``general.png``: general-capability scores, when run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safepref.records import iter_jsonl, write_json, write_text

KIND_COLOUR = {"start": "#7f7f7f", "multi": "#d62728", "human": "#1f77b4", "self": "#2ca02c"}
KIND_LABEL = {"start": "starting model (SFT)", "multi": "multi-model pairs", "human": "human pairs",
              "self": "self-generated pairs"}


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _stage_dirs(run_dir: Path) -> dict[str, Path]:
    index = _json(run_dir / "index.json")
    if index is None:
        from safepref.errors import SafeprefError

        raise SafeprefError(f"{run_dir} has no index.json: is it a `safepref run` output folder?")
    folders = {}
    for name, folder in index.items():
        path = run_dir / folder  # relative entries; absolute ones stay as they are
        if not path.exists() and (run_dir / "stages" / path.name).exists():
            path = run_dir / "stages" / path.name  # a run folder moved since (older absolute index)
        folders[name] = path
    return folders


def collect(run_dir: Path, conditions: list[str]) -> dict[str, Any]:
    """Every number of the run, per condition (missing keys where a stage did not run or has not finished)."""
    from safepref.pipeline import CONDITION_KIND

    dirs = _stage_dirs(run_dir)
    done = {name: folder for name, folder in dirs.items() if (folder / "stage.json").exists()}
    audit = _json(done["audit"] / "audit.json") if "audit" in done else None
    audit_by_set = {r["name"]: r for r in (audit or {}).get("sets", [])}
    rows: dict[str, Any] = {}
    for condition in conditions:
        row: dict[str, Any] = {"kind": CONDITION_KIND[condition]}
        if f"build/{condition}" in done:
            sheet = _json(done[f"build/{condition}"] / "datasheet.json") or {}
            row["datasheet"] = {k: sheet.get(k) for k in ("rows", "prompts", "sources", "length", "reward",
                                                           "refusal", "drops")}
        if f"train/{condition}" in done:
            folder = done[f"train/{condition}"]
            summary = _json(folder / "summary.json") or {}
            row["train"] = {k: summary.get(k) for k in ("pairs", "training", "monitor", "seconds")}
            row["train_curve"] = _reward_curve(folder / "metrics.jsonl")
        if f"eval/{condition}" in done:
            folder = done[f"eval/{condition}"]
            row["jailbreak"] = _json(folder / "jailbreak" / "metrics.json")
            row["refusal"] = _json(folder / "refusal" / "metrics.json")
            row["general"] = _json(folder / "general" / "results.json")
        if condition in audit_by_set:
            row["audit"] = _audit_numbers(audit_by_set[condition])
        rows[condition] = row
    return {"run": str(run_dir), "conditions": rows,
            "stage_seconds": {name: (_json(folder / "stage.json") or {}).get("seconds")
                              for name, folder in done.items()},
            "missing_stages": sorted(set(dirs) - set(done) - {"report"})}


def _reward_curve(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    return [(int(row["step"]), float(row["rewards/accuracies"])) for _, row in iter_jsonl(path)
            if row.get("rewards/accuracies") is not None and row.get("step") is not None]


def _audit_numbers(result: dict[str, Any]) -> dict[str, Any]:
    """Best probe AUC per representation, the best overall, and the audit's own verdict."""
    auc = {r["spec"]: r["best"]["auc"] for r in result.get("representations", []) if r.get("best")}
    best = max(auc, key=lambda k: auc[k], default=None)
    return {"auc": auc, "best": best, "best_auc": auc.get(best) if best else None,
            "verdict": result.get("verdict"), "cue": result.get("cue"), "margin": result.get("margin")}


def asr_of(row: dict[str, Any], judge: str) -> float | None:
    return ((row.get("jailbreak") or {}).get("asr") or {}).get(judge)


def refusal_rate_of(row: dict[str, Any], detector: str = "opening") -> float | None:
    """Over-refusal: share of safe XSTest prompts refused (``opening``: a refusal phrase opens the answer)."""
    rates = ((row.get("refusal") or {}).get("safe") or {}).get("refusal_rate") or {}
    return rates.get(detector)


def compliance_rate_of(row: dict[str, Any], detector: str = "opening") -> float | None:
    rates = ((row.get("refusal") or {}).get("unsafe") or {}).get("compliance_rate") or {}
    return rates.get(detector)


# The judge a single-judge figure uses, first found wins: the study's rubric judge, then the trained
# classifiers, then keyword matching (which many small models saturate: they never use a refusal phrase).
PRIMARY_JUDGES = ("rubric", "classifier", "hf-classifier", "keyword")


def _judges(summary: dict[str, Any]) -> list[str]:
    """Judges present in the run, the primary one (PRIMARY_JUDGES order) first."""
    judges: list[str] = []
    for row in summary["conditions"].values():
        judges += [j for j in ((row.get("jailbreak") or {}).get("asr") or {}) if j not in judges]
    rank = {j: i for i, j in enumerate(PRIMARY_JUDGES)}
    return sorted(judges, key=lambda j: rank.get(j, len(rank)))


# ------------------------------------------------------------------------------------------------ figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_asr(summary: dict[str, Any], path: Path) -> bool:
    judges = _judges(summary)
    conditions = list(summary["conditions"])
    if not judges:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * len(conditions) + 2, 3.6))
    width = 0.8 / len(judges)
    for j, judge in enumerate(judges):
        for i, condition in enumerate(conditions):
            row = summary["conditions"][condition]
            value = asr_of(row, judge)
            if value is None:
                continue
            ax.bar(i + j * width, value, width, color=KIND_COLOUR[row["kind"]], alpha=1.0 - 0.35 * j,
                   edgecolor="black", linewidth=0.5)
            ax.text(i + j * width, value + 0.01, f"{value:.2f}", ha="center", fontsize=7)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(conditions))], conditions, rotation=20)
    ax.set_ylabel("attack success rate")
    ax.set_ylim(0, 1.25)  # headroom for the legend above bars that reach 1.0
    ax.set_title("Jailbreak ASR per condition (" + ", ".join(f"{j}: shade {k + 1}" for k, j in
                                                       enumerate(judges)) + ")", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in KIND_COLOUR.values()]
    ax.legend(handles, KIND_LABEL.values(), fontsize=7, loc="upper center", ncol=len(KIND_LABEL))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_refusal(summary: dict[str, Any], path: Path) -> bool:
    conditions = [c for c, r in summary["conditions"].items() if refusal_rate_of(r) is not None]
    if not conditions:
        return False
    plt = _plt()
    judges = _judges(summary)
    fig, ax = plt.subplots(figsize=(1.1 * len(conditions) + 2, 3.4))
    xs = range(len(conditions))
    rates = [refusal_rate_of(summary["conditions"][c]) for c in conditions]
    ax.bar([x - 0.2 for x in xs], rates, 0.4, label="over-refusal (safe XSTest prompts)", color="#9467bd")
    if judges:
        asr = [asr_of(summary["conditions"][c], judges[0]) or 0.0 for c in conditions]
        ax.bar([x + 0.2 for x in xs], asr, 0.4, label=f"ASR ({judges[0]})", color="#d62728")
    ax.set_xticks(list(xs), conditions, rotation=20)
    ax.set_ylim(0, 1.25)
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    ax.set_title("Over-refusal beside attack success", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_separability(summary: dict[str, Any], path: Path) -> bool:
    judges = _judges(summary)
    points = []
    for condition, row in summary["conditions"].items():
        audit = row.get("audit") or {}
        asr = asr_of(row, judges[0]) if judges else None
        if audit.get("best_auc") is not None and asr is not None:
            points.append((condition, audit["best_auc"], asr, row["kind"]))
    if not points:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for condition, auc, asr, kind in points:
        ax.scatter(auc, asr, color=KIND_COLOUR[kind], s=40, edgecolor="black", linewidth=0.5)
        ax.annotate(condition, (auc, asr), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("separability of chosen vs rejected (best probe AUC)")
    ax.set_ylabel(f"ASR after DPO ({judges[0]})")
    ax.set_xlim(0.4, 1.02)
    ax.set_ylim(0, 1.05)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_reward_accuracy(summary: dict[str, Any], path: Path) -> bool:
    curves = {c: r.get("train_curve") for c, r in summary["conditions"].items() if r.get("train_curve")}
    if not curves:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for condition, curve in curves.items():
        kind = summary["conditions"][condition]["kind"]
        ax.plot([s for s, _ in curve], [v for _, v in curve], marker="o", markersize=3, label=condition,
                color=KIND_COLOUR[kind], linestyle="-" if kind == "multi" else "--")
    ax.set_xlabel("DPO step")
    ax.set_ylabel("reward accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_general(summary: dict[str, Any], path: Path) -> bool:
    table = {c: _general_scores(r) for c, r in summary["conditions"].items() if _general_scores(r)}
    if not table:
        return False
    plt = _plt()
    tasks = sorted({t for scores in table.values() for t in scores})
    fig, ax = plt.subplots(figsize=(1.2 * len(table) + 2, 3.4))
    width = 0.8 / len(tasks)
    for j, task in enumerate(tasks):
        ax.bar([i + j * width for i in range(len(table))], [scores.get(task, 0) for scores in table.values()],
               width, label=task)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(table))], list(table), rotation=20)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _general_scores(row: dict[str, Any]) -> dict[str, float]:
    general = row.get("general") or {}
    scores = general.get("scores") or general.get("results") or {}
    out = {}
    for task, metrics in scores.items():
        if isinstance(metrics, dict):
            for key in ("acc_norm", "acc", "mc2", "exact_match"):
                if isinstance(metrics.get(key), int | float):
                    out[task] = float(metrics[key])
                    break
    return out


# ------------------------------------------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(summary: dict[str, Any], figures: list[str], name: str) -> str:
    judges = _judges(summary)
    lines = [f"# safepref report: {name}", "",
             "Conditions in the order of the study's figure. Kind: multi = chosen and rejected from different "
             "models, human = human-labelled pairs, self = the target's own samples ranked by a reward model.",
             "", "| condition | kind | pairs | " + " | ".join(f"ASR ({j})" for j in judges)
             + " | over-refusal (XSTest safe) | compliance (XSTest unsafe) | best probe AUC (representation) "
             "| chosen − rejected length (tokens) |",
             "|---|---|---|" + "---|" * len(judges) + "---|---|---|---|"]
    for condition, row in summary["conditions"].items():
        sheet = row.get("datasheet") or {}
        audit = row.get("audit") or {}
        length = sheet.get("length") or {}
        gap = None
        if length.get("chosen_mean") is not None and length.get("rejected_mean") is not None:
            gap = length["chosen_mean"] - length["rejected_mean"]
        cue = f"{_fmt(audit.get('best_auc'))} ({audit.get('best')})" if audit.get("best") else "—"
        lines.append(f"| {condition} | {row['kind']} | {_fmt(sheet.get('rows'))} | "
                     + " | ".join(_fmt(asr_of(row, j)) for j in judges)
                     + f" | {_fmt(refusal_rate_of(row))} | {_fmt(compliance_rate_of(row))} | {cue} | {_fmt(gap, 1)} |")
    verdicts = [(c, (r.get("audit") or {}).get("verdict")) for c, r in summary["conditions"].items()]
    if any(v for _, v in verdicts):
        lines += ["", "## Separability audit verdicts", ""]
        lines += [f"- **{c}**: {v if isinstance(v, str) else json.dumps(v)}" for c, v in verdicts if v]
    trained = [(c, (r.get("train") or {}).get("monitor")) for c, r in summary["conditions"].items()]
    if any(m for _, m in trained):
        lines += ["", "## DPO reward-hacking monitor", "",
                  "| condition | steps | reward acc. final | first step > 0.95 | margin growth | chosen log-p drift "
                  "| rejected log-p drift | length gap (batch mean) |", "|---|---|---|---|---|---|---|---|"]
        for condition, m in trained:
            if not m:
                continue
            acc, margin, drift, length = (m.get(k) or {} for k in ("accuracy", "margin", "drift", "length"))
            lines.append(f"| {condition} | {_fmt(m.get('total_steps'))} | {_fmt(acc.get('final'))} | "
                         f"{_fmt(acc.get('first_step_above'))} | {_fmt(margin.get('growth'))} | "
                         f"{_fmt(drift.get('chosen_final'))} | {_fmt(drift.get('rejected_final'))} | "
                         f"{_fmt(length.get('batch_gap_mean'), 1)} |")
    if summary["missing_stages"]:
        lines += ["", "Stages without results: " + ", ".join(summary["missing_stages"])]
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    lines += ["", "Every number above is in `summary.json`; each stage's own outputs are under `stages/`."]
    return "\n".join(lines) + "\n"


def render_summary(summary: dict[str, Any], out: Path, name: str) -> list[str]:
    """Figures, ``summary.json`` and ``report.md`` from a collected summary; returns the figure files."""
    figures = []
    for file, plot in (("asr.png", plot_asr), ("refusal.png", plot_refusal),
                       ("separability_vs_asr.png", plot_separability),
                       ("reward_accuracy.png", plot_reward_accuracy), ("general.png", plot_general)):
        if plot(summary, out / file):
            figures.append(file)
    summary["figures"] = figures
    write_json(out / "summary.json", summary)
    write_text(out / "report.md", markdown(summary, figures, name))
    return figures


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, conditions: list[str] | None = None,
                 name: str | None = None) -> dict[str, Any]:
    """Write report.md, the figures and summary.json into ``out_dir`` (default: the run folder)."""
    from safepref.pipeline import CONDITION_ORDER

    run_dir = Path(run_dir)
    out = Path(out_dir or run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if conditions is None:
        experiment = _json(run_dir / "experiment.json") or {}
        conditions = (experiment.get("experiment") or {}).get("conditions") or CONDITION_ORDER
        name = name or (experiment.get("experiment") or {}).get("name")
    ordered = [c for c in CONDITION_ORDER if c in conditions]
    summary = collect(run_dir, ordered)
    figures = render_summary(summary, out, name or run_dir.name)
    if out != run_dir:  # the report is also visible at the top of the run folder
        for file in ["report.md", "summary.json", *figures]:
            (run_dir / file).write_bytes((out / file).read_bytes())
    from safepref.report_html import write_html_report  # report.html (also refreshes the model cards)

    write_html_report(run_dir, out, summary, name or run_dir.name)
    return {"figures": figures, "conditions": len(ordered), "missing_stages": summary["missing_stages"]}
