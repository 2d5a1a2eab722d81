"""The report's figures, each from ``summary.json``'s numbers; every rate is drawn with its 95% interval.

- ``asr.png``: attack success rate per condition in the study's style (SFT first; multi-model conditions,
  human pairs and self-generated pairs coloured apart), one bar group per judge, error bars = 95% interval
  (pooled over seeds when there are several);
- ``asr_sets.png``: the primary judge's ASR on every prompt set, when there are several;
- ``refusal.png``: over-refusal on safe XSTest prompts and compliance on unsafe ones, with intervals;
- ``separability_vs_asr.png``: audit AUC of each set against the ASR after DPO on it (Spearman in the title);
- ``reward_accuracy.png``: DPO reward accuracy per step (first seed), one curve per condition;
- ``general.png``: general-capability scores, when run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KIND_COLOUR = {"start": "#7f7f7f", "multi": "#d62728", "human": "#1f77b4", "self": "#2ca02c"}
KIND_LABEL = {"start": "starting model (SFT)", "multi": "multi-model pairs", "human": "human pairs",
              "self": "self-generated pairs"}


def label(condition: str) -> str:
    """The study's name of a condition (``self-rm`` -> ``Self+RM``)."""
    from safepref.conditions import CONDITIONS

    return "SFT" if condition == "sft" else getattr(CONDITIONS.get(condition), "label", condition)


def rate(row: dict[str, Any], metric: str) -> dict[str, Any] | None:
    entry = (row.get("rates") or {}).get(metric)
    return entry if entry and entry.get("rate") is not None else None


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _errorbar(ax, x: float, entry: dict[str, Any]) -> None:
    lo, hi = entry["ci95"]
    ax.errorbar(x, entry["rate"], yerr=[[entry["rate"] - lo], [hi - entry["rate"]]], fmt="none",
                ecolor="black", elinewidth=0.8, capsize=2)


def _save(fig, ax, path: Path, plt) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def plot_asr(summary: dict[str, Any], path: Path, judges: list[str]) -> bool:
    conditions = list(summary["conditions"])
    judges = [j for j in judges if any(rate(r, f"asr/jailbreak/{j}") for r in summary["conditions"].values())]
    if not judges:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.3 * len(conditions) + 2, 4.0))
    width = 0.8 / len(judges)
    for j, judge in enumerate(judges):
        for i, condition in enumerate(conditions):
            row = summary["conditions"][condition]
            entry = rate(row, f"asr/jailbreak/{judge}")
            if entry is None:
                continue
            ax.bar(i + j * width, entry["rate"], width, color=KIND_COLOUR[row["kind"]], alpha=1.0 - 0.35 * j,
                   edgecolor="black", linewidth=0.5)
            if entry.get("ci95"):
                _errorbar(ax, i + j * width, entry)
            ax.text(i + j * width, 0.02, f"{entry['rate']:.2f}", ha="center", fontsize=7, rotation=90,
                    color="white")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(conditions))], [label(c) for c in conditions],
                  rotation=25, ha="right")
    ax.set_ylabel("attack success rate (95% interval)")
    ax.set_ylim(0, 1.3)  # headroom for the legend above bars that reach 1.0
    sets = summary.get("prompt_sets") or {}
    judged = f"judge {judges[0]}" if len(judges) == 1 else ", ".join(f"{j}: shade {k + 1}"
                                                                     for k, j in enumerate(judges))
    ax.set_title(f"Jailbreak ASR on {sets.get('jailbreak', 'the study set')}, {_seeds(summary)} ({judged})",
                 fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in KIND_COLOUR.values()]
    ax.legend(handles, KIND_LABEL.values(), fontsize=7, loc="upper center",
              ncol=len(KIND_LABEL) if len(conditions) >= 6 else 2)
    return _save(fig, ax, path, plt)


def _seeds(summary: dict[str, Any]) -> str:
    seeds = summary.get("seeds") or []
    return f"{len(seeds)} seeds pooled" if len(seeds) > 1 else "one seed"


def plot_sets(summary: dict[str, Any], path: Path, judge: str) -> bool:
    sets = list(summary.get("prompt_sets") or {})
    if len(sets) < 2:
        return False
    plt = _plt()
    conditions = list(summary["conditions"])
    fig, ax = plt.subplots(figsize=(1.3 * len(conditions) + 2, 4.0))
    width = 0.8 / (len(sets) + 1)
    for k, folder in enumerate([*sets, "pooled"]):
        for i, condition in enumerate(conditions):
            entry = rate(summary["conditions"][condition], f"asr/{folder}/{judge}")
            if entry is None:
                continue
            ax.bar(i + k * width, entry["rate"], width, color=f"C{k}", edgecolor="black", linewidth=0.5,
                   label=(summary["prompt_sets"].get(folder, "all sets pooled")) if i == 0 else None)
            if entry.get("ci95"):
                _errorbar(ax, i + k * width, entry)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(conditions))], [label(c) for c in conditions],
                  rotation=25, ha="right")
    ax.set_ylabel(f"ASR ({judge}, 95% interval)")
    ax.set_ylim(0, 1.3)
    ax.legend(fontsize=7, loc="upper center", ncol=len(sets) + 1)
    ax.set_title(f"ASR per prompt set, {_seeds(summary)}", fontsize=9)
    return _save(fig, ax, path, plt)


def plot_refusal(summary: dict[str, Any], path: Path, detector: str = "opening") -> bool:
    metrics = [(f"over_refusal/{detector}", "over-refusal (XSTest safe prompts refused)", "#9467bd"),
               (f"compliance/{detector}", "compliance (XSTest unsafe prompts answered)", "#d62728")]
    conditions = [c for c, r in summary["conditions"].items() if rate(r, metrics[0][0]) or rate(r, metrics[1][0])]
    if not conditions:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * len(conditions) + 2, 3.8))
    for k, (metric, text, colour) in enumerate(metrics):
        for i, condition in enumerate(conditions):
            entry = rate(summary["conditions"][condition], metric)
            if entry is None:
                continue
            ax.bar(i - 0.2 + 0.4 * k, entry["rate"], 0.4, color=colour, label=text if i == 0 else None)
            if entry.get("ci95"):
                _errorbar(ax, i - 0.2 + 0.4 * k, entry)
    ax.set_xticks(list(range(len(conditions))), [label(c) for c in conditions], rotation=25, ha="right")
    ax.set_ylim(0, 1.3)
    ax.set_ylabel(f"rate ({detector} detector, 95% interval)")
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    ax.set_title(f"XSTest: over-refusal and unsafe compliance, {_seeds(summary)}", fontsize=9)
    return _save(fig, ax, path, plt)


def plot_separability(summary: dict[str, Any], path: Path, judge: str) -> bool:
    points = []
    for condition, row in summary["conditions"].items():
        auc = (row.get("audit") or {}).get("best_auc")
        entry = rate(row, f"asr/jailbreak/{judge}")
        if auc is not None and entry is not None:
            points.append((condition, auc, entry, row["kind"]))
    if not points:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.9))
    for condition, auc, entry, kind in points:
        ax.scatter(auc, entry["rate"], color=KIND_COLOUR[kind], s=40, edgecolor="black", linewidth=0.5, zorder=3)
        if entry.get("ci95"):
            _errorbar(ax, auc, entry)
        ax.annotate(label(condition), (auc, entry["rate"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    sep = summary.get("separability") or {}
    title = "separability vs ASR"
    if sep.get("rho") is not None:
        title += f": Spearman {sep['rho']:+.2f}, permutation p = {sep['p']:.2f}, n = {sep['n']}"
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("separability of chosen vs rejected (best probe AUC)")
    ax.set_ylabel(f"ASR after DPO ({judge}, 95% interval)")
    ax.set_xlim(0.4, 1.02)
    ax.set_ylim(0, 1.05)
    return _save(fig, ax, path, plt)


def plot_reward_accuracy(summary: dict[str, Any], path: Path) -> bool:
    curves = {c: r.get("train_curve") for c, r in summary["conditions"].items() if r.get("train_curve")}
    if not curves:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for condition, curve in curves.items():
        kind = summary["conditions"][condition]["kind"]
        ax.plot([s for s, _ in curve], [v for _, v in curve], marker="o", markersize=2, label=label(condition),
                color=KIND_COLOUR[kind], linestyle="-" if kind == "multi" else "--", linewidth=1)
    ax.set_xlabel("DPO step")
    ax.set_ylabel("reward accuracy (one batch)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"DPO reward accuracy, seed {(summary.get('seeds') or ['?'])[0]}", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, ax, path, plt)


def general_scores(row: dict[str, Any]) -> dict[str, float]:
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


def plot_general(summary: dict[str, Any], path: Path) -> bool:
    table = {c: general_scores(r) for c, r in summary["conditions"].items() if general_scores(r)}
    if not table:
        return False
    plt = _plt()
    tasks = sorted({t for scores in table.values() for t in scores})
    fig, ax = plt.subplots(figsize=(1.2 * len(table) + 2, 3.4))
    width = 0.8 / len(tasks)
    for j, task in enumerate(tasks):
        ax.bar([i + j * width for i in range(len(table))], [scores.get(task, 0) for scores in table.values()],
               width, label=task)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(table))], [label(c) for c in table], rotation=25,
                  ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (first seed)")
    ax.legend(fontsize=7)
    return _save(fig, ax, path, plt)
