"""Verdicts in plain words, the side-by-side table, and the report files (JSON, Markdown, PNG).

Separability levels by probe ROC AUC (held-out, grouped by prompt):

  >= 0.90 highly separable     a linear reward can tell the sides apart almost always
  >= 0.75 separable
  >= 0.60 weakly separable
  <  0.60 not separable        close to chance (0.5)

The cue named in a verdict is the cheapest cue (length, then refusal phrases, then TF-IDF words) whose probe
reaches ``separable`` and comes within ``CUE_SLACK`` of the best cue; "cheapest" because a length cue is a
strictly simpler story than a vocabulary one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from safepref.audit.representations import CUES
from safepref.records import write_json, write_jsonl, write_text

LEVELS = ((0.90, "highly separable"), (0.75, "separable"), (0.60, "weakly separable"), (0.0, "not separable"))
CUE_SLACK = 0.02


def level_of(auc: float) -> str:
    return next(name for bound, name in LEVELS if auc >= bound)


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ci(interval: list[float] | tuple[float, float]) -> str:
    if any(v is None or math.isnan(v) for v in interval):
        return ""
    return f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def best_probe(result: dict[str, Any], families: tuple[str, ...] | None = None) -> dict[str, Any] | None:
    candidates = [r["best"] for r in result["representations"] if families is None or r["family"] in families]
    return max(candidates, key=lambda p: p["auc"]) if candidates else None


def named_cue(result: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The cheapest cue that explains the separation, or (None, best cue probe) when none does."""
    cues = {r["spec"]: r["best"] for r in result["representations"] if r["spec"] in CUES}
    if not cues:
        return None, None
    top = max(p["auc"] for p in cues.values())
    for name in CUES:
        probe = cues.get(name)
        if probe is not None and probe["auc"] >= 0.75 and probe["auc"] >= top - CUE_SLACK:
            return name, probe
    return None, max(cues.values(), key=lambda p: p["auc"])


def _cue_detail(name: str, cues: dict[str, Any]) -> str:
    if name == "length":
        s = cues["length"]
        return (f"chosen is longer in {s['share_chosen_longer']:.0%} of pairs; median "
                f"{s['chosen_median_chars']:.0f} vs {s['rejected_median_chars']:.0f} characters")
    if name == "refusal":
        s = cues["refusal"]
        return (f"refusal phrases in {s['chosen_refusal_rate']:.0%} of chosen vs {s['rejected_refusal_rate']:.0%} "
                f"of rejected answers")
    words = cues.get("tfidf_top_words", {})
    return (f"words that mark chosen: {', '.join(words.get('chosen', [])[:5]) or '-'}; "
            f"rejected: {', '.join(words.get('rejected', [])[:5]) or '-'}")


def verdict(result: dict[str, Any]) -> tuple[str, str | None, str]:
    """(text, named cue or None, level) for one audited set."""
    best = best_probe(result)
    level = level_of(best["auc"])
    lines = [f"{result['name']}: chosen and rejected are {level} (best probe {best['representation']}: "
             f"AUC {_fmt(best['auc'])} {_ci(best['auc_ci'])}, accuracy {_fmt(best['accuracy'])}, "
             f"chosen scored above rejected in {_fmt(best['pair_accuracy'] * 100, 0)}% of pairs)."]
    cue, cue_probe = named_cue(result)
    if cue is not None:
        lines.append(f"Chosen and rejected are separable at {_fmt(cue_probe['auc'])} by {cue} alone "
                     f"({_cue_detail(cue, result['cues'])}): DPO can lower its loss on this cue instead of "
                     f"learning what makes an answer safe.")
    elif best["auc"] >= 0.60 and cue_probe is not None and cue_probe["auc"] >= best["auc"] - CUE_SLACK:
        # The cue is (within slack) the best probe: it explains what separation there is, even below the
        # 0.75 at which a cue is named.
        name = next(r["spec"] for r in result["representations"] if r["best"] is cue_probe)
        lines.append(f"A cheap cue separates them as well as any probe: {name} alone reaches AUC "
                     f"{_fmt(cue_probe['auc'])} ({_cue_detail(name, result['cues'])}), below the 0.75 at "
                     f"which a cue is named.")
    elif best["auc"] >= 0.60 and cue_probe is not None:
        lines.append(f"No cheap cue explains it (best cue {cue_probe['representation']}: AUC "
                     f"{_fmt(cue_probe['auc'])}, below the best probe's {_fmt(best['auc'])}): the difference lies "
                     f"in style or content beyond length, refusal phrases and word choice.")
    elif best["auc"] < 0.60:
        lines.append("Low reward-hacking risk by this measure: no probe beats chance by much.")
    margin = result.get("margin")
    if margin:
        m, t = margin["margin"], margin["margin_per_token"]
        lines.append(f"The reference model already prefers chosen in {m['share_prefers_chosen']:.0%} of pairs "
                     f"(median log-prob margin {_fmt(m['median'], 1)} nats; per token {_fmt(t['median'])}).")
    return " ".join(lines), cue, level


# ------------------------------------------------------------------------------------------------ tables


def _columns(results: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for result in results:
        for rep in result["representations"]:
            if rep["spec"] not in columns:
                columns.append(rep["spec"])
    return columns


def _cell(result: dict[str, Any], spec: str, metric: str) -> str:
    rep = next((r for r in result["representations"] if r["spec"] == spec), None)
    if rep is None:
        return "-"
    probe = rep["best"]
    layer = f" {probe['representation'].split(':')[-1]}" if len(rep["probes"]) > 1 else ""
    if metric == "auc":
        return f"{probe['auc']:.2f} {_ci(probe['auc_ci'])}{layer}".strip()
    return f"{probe[metric]:.2f}{layer}"


def table_rows(results: list[dict[str, Any]], metric: str = "auc") -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per set, one column per representation, then margin and named cue."""
    columns = _columns(results)
    header = ["set", "pairs", *columns, "ref prefers chosen", "cue"]
    rows = []
    for result in results:
        margin = result.get("margin")
        share = f"{margin['margin']['share_prefers_chosen']:.0%}" if margin else "-"
        rows.append([result["name"], str(result["n_pairs"]), *[_cell(result, c, metric) for c in columns],
                     share, result.get("cue") or "-"])
    return header, rows


def text_table(results: list[dict[str, Any]], metric: str = "auc") -> str:
    header, rows = table_rows(results, metric)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: list[dict[str, Any]], metric: str = "auc") -> str:
    header, rows = table_rows(results, metric)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def margin_table(results: list[dict[str, Any]]) -> str:
    lines = ["| set | median margin (nats) | p10 | p90 | per-token median | ref prefers chosen |",
             "|---|---|---|---|---|---|"]
    for r in results:
        if "margin" not in r:
            continue
        m, t = r["margin"]["margin"], r["margin"]["margin_per_token"]
        lines.append(f"| {r['name']} | {m['median']:.1f} | {m['p10']:.1f} | {m['p90']:.1f} | {t['median']:.2f} "
                     f"| {m['share_prefers_chosen']:.0%} |")
    return "\n".join(lines)


def comparison(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Sets ranked by their best probe AUC (most separable first), for the side-by-side question."""
    ranked = sorted(results, key=lambda r: -best_probe(r)["auc"])
    return {"ranked_by_best_auc": [{"name": r["name"], "best": best_probe(r)["representation"],
                                    "auc": best_probe(r)["auc"], "level": r.get("level"), "cue": r.get("cue")}
                                   for r in ranked]}


def render_text(report: dict[str, Any]) -> str:
    """What the command prints: the AUC table, the accuracy table, then one verdict per set."""
    results = report["sets"]
    parts = ["Probe ROC AUC [95% CI] (held-out, folds grouped by prompt; 0.5 = chance):",
             text_table(results, "auc"), "", "Probe accuracy:", text_table(results, "accuracy"), ""]
    note = sweep_note(results)
    if note:
        parts += [note, ""]
    parts += [r["verdict"] for r in results]
    return "\n".join(parts)


def sweep_note(results: list[dict[str, Any]]) -> str:
    """Why a sweep's cell reads high: it is the best of several layers, picked after seeing the scores."""
    sweeps = {rep["spec"]: len(rep["probes"]) for r in results for rep in r["representations"]
              if len(rep["probes"]) > 1}
    if not sweeps:
        return ""
    names = ", ".join(f"{spec} (best of {n})" for spec, n in sweeps.items())
    return (f"Note: {names} shows the best layer of each set, chosen after seeing the held-out scores, so it "
            f"is optimistic; a layer fixed in advance (hidden:auto) is the unbiased number. Every layer is in "
            f"audit.json and the figure.")


def render_markdown(report: dict[str, Any]) -> str:
    results = report["sets"]
    parts = ["# Separability audit", "", f"`{report['command']}`", "",
             "## Probe ROC AUC [95% CI]", "", markdown_table(results, "auc"), "",
             "## Probe accuracy", "", markdown_table(results, "accuracy"), ""]
    for result in results:
        for label, reason in result.get("unavailable", {}).items():
            parts.append(f"- `{result['name']}`: {label} could not be probed (shown as -): {reason}")
    if sweep_note(results):
        parts += [sweep_note(results), ""]
    if any("margin" in r for r in results):
        parts += ["## Reference log-prob margin (chosen - rejected)", "", margin_table(results), ""]
    parts += ["## Verdicts", ""] + [f"- {r['verdict']}" for r in results] + [""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ figure


def plot(report: dict[str, Any], path: str | Path) -> None:
    """A small PNG: AUC per representation per set (with CIs), the margin distributions, a layer sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    results = report["sets"]
    columns = _columns(results)
    sweeps = [(r["name"], rep["probes"]) for r in results for rep in r["representations"]
              if len(rep["probes"]) > 1]
    has_margin = any("_margin_pairs" in r or "margin" in r for r in results)
    panels = 1 + int(has_margin) + int(bool(sweeps))
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels + 1.5, 3.4), squeeze=False)
    axes = axes[0]
    width = 0.8 / len(results)
    x = np.arange(len(columns))
    for k, result in enumerate(results):
        aucs, lows, highs = [], [], []
        for spec in columns:
            rep = next((r for r in result["representations"] if r["spec"] == spec), None)
            probe = rep["best"] if rep else {"auc": np.nan, "auc_ci": [np.nan, np.nan]}
            # A value not computed is NaN in memory and null once read back from JSON.
            auc, low, high = (np.nan if v is None else float(v) for v in (probe["auc"], *probe["auc_ci"]))
            aucs.append(auc)
            lows.append(0 if np.isnan(low) or np.isnan(auc) else auc - low)
            highs.append(0 if np.isnan(high) or np.isnan(auc) else high - auc)
        axes[0].bar(x + (k - (len(results) - 1) / 2) * width, aucs, width, yerr=[lows, highs], capsize=2,
                    label=result["name"])
    axes[0].axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    axes[0].set_xticks(x, columns, rotation=30, ha="right", fontsize=8)
    axes[0].set_ylim(0.3, 1.02)
    axes[0].set_ylabel("probe ROC AUC (held-out)")
    axes[0].set_title("chosen vs rejected separability", fontsize=9)
    axes[0].legend(fontsize=7)
    panel = 1
    if has_margin:
        data = [r["_margin_pairs"]["margin"] for r in results if "_margin_pairs" in r]
        names = [r["name"] for r in results if "_margin_pairs" in r]
        if data:
            axes[panel].boxplot(data, showfliers=False)
            axes[panel].set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
        axes[panel].axhline(0, color="grey", linestyle="--", linewidth=0.8)
        axes[panel].set_ylabel("log p(chosen) - log p(rejected)")
        axes[panel].set_title("reference margin at step zero", fontsize=9)
        panel += 1
    if sweeps:
        for name, probes in sweeps:
            layers = [int(p["representation"].rsplit("L", 1)[-1]) for p in probes]
            axes[panel].plot(layers, [p["auc"] for p in probes], marker=".", label=name)
        axes[panel].axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
        axes[panel].set_xlabel("layer (0 = embeddings)")
        axes[panel].set_ylabel("probe ROC AUC")
        axes[panel].set_title("hidden-state sweep", fontsize=9)
        axes[panel].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write_report(report: dict[str, Any], out_dir: str | Path) -> None:
    """``audit.json`` (everything but per-pair arrays), ``margins.jsonl``, ``audit.md``, ``audit.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(report, out / "audit.png")
    rows = []
    for result in report["sets"]:
        pairs = result.get("_margin_pairs")
        if pairs is None:
            continue
        for i in range(len(pairs["margin"])):
            rows.append({"set": result["name"], "pair": i, "prompt_id": result["_prompt_ids"][i],
                         **{k: round(float(v[i]), 4) for k, v in pairs.items()}})
    if rows:
        write_jsonl(out / "margins.jsonl", rows)
    clean = dict(report, sets=[{k: v for k, v in r.items() if not k.startswith("_")} for r in report["sets"]])
    write_json(out / "audit.json", clean)
    write_text(out / "audit.md", render_markdown(report))
