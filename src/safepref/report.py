"""The study's report for one run folder: ``report.md``, PNG figures and ``summary.json`` with every number.

  safepref report runs/quickstart          # (re)write the report of a run; `safepref run` calls this last

Reads the stage outputs listed in ``<run>/index.json`` (written by ``safepref run``): datasheets of the
built sets, the audit, DPO metrics and summaries, and the per-answer verdicts of the jailbreak / over-refusal
evaluations (``report_stats``: every rate with a 95% interval and n, paired comparisons). Anything a run did not
produce, or a file deleted since, is reported as missing rather than guessed or silently left out.

``summary.json`` (read by ``report.html``; keys absent where a stage did not run):

- ``run``, ``seeds`` (list of int), ``prompt_sets`` ({eval folder: prompt spec}: ``jailbreak`` is the study's
  set, ``jailbreak-<name>`` each further set), ``stage_seconds``, ``missing_stages``, ``missing`` (one
  sentence per file or stage a row lacks), ``figures``, ``primary_judge``, ``judge_validation``
  ({judge: agreement dict or null});
- ``conditions``: {condition: row}, in the study's order. A row has ``kind``, ``label`` and
  - ``rates``: {metric: entry}; metric ``asr/<set folder>/<judge>``, ``asr/pooled/<judge>`` (several sets),
    ``over_refusal/<detector>``, ``compliance/<detector>``; entry ``{rate, k, n, ci95: [lo, hi], method,
    seeds}``, plus ``prompts`` and ``per_seed: {seed: {rate, k, n, ci95}}`` when seeds are pooled (bootstrap
    over prompts and seeds); one seed: Wilson;
  - ``seeds``: {seed: {train, train_curve, monitor, jailbreak: {set folder: metrics.json}, refusal, general}};
  - the first seed's ``datasheet``, ``train``, ``train_curve``, ``jailbreak`` (study set), ``refusal``,
    ``general`` and ``audit`` ({auc, best, best_auc, verdict, cue, margin}) as before;
- ``comparisons``: a list of ``{metric, condition, baseline ("sft" or "self-rm"), difference (condition minus
  baseline), ci95 (paired bootstrap over prompts and seeds), n, prompts, seeds, excludes_zero, mcnemar: {seed:
  {p, p_holm, only_a, only_b, n}}, holm_family (comparisons in this metric's family: Holm runs over them
  within each seed), holm_significant_seeds}``;
- ``separability``: ``{rho, p, n, method, conditions, judge}``: Spearman of best probe AUC against pooled ASR.

Figures: see ``report_figures``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safepref import report_figures as figs
from safepref import report_stats as rs
from safepref.records import iter_jsonl, write_json, write_text

KIND_COLOUR = figs.KIND_COLOUR
KIND_LABEL = figs.KIND_LABEL


def _json(path: Path) -> dict[str, Any] | None:
    from safepref.records import read_json

    return read_json(path, missing_ok=True)  # a corrupt file: DataError naming it


def _stage_dirs(run_dir: Path) -> dict[str, Path]:
    index = _json(run_dir / "index.json")  # DataError (one line) when it is not a JSON object
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


def _seed_stages(dirs: dict[str, Path], prefix: str, seeds: list[int]) -> dict[int, str]:
    """{seed: stage name} of ``prefix`` (``train/hc-self``): one-seed runs name it plainly, multi-seed runs
    ``<prefix>/seed-<s>``. A plain stage (SFT's evaluation) serves the first seed."""
    found = {int(m.group(1)): name for name in dirs
             if (m := re.fullmatch(re.escape(prefix) + r"/seed-(-?\d+)", name))}
    if prefix in dirs and seeds and seeds[0] not in found:
        found[seeds[0]] = prefix
    return dict(sorted(found.items()))


def _run_seeds(run_dir: Path, dirs: dict[str, Path]) -> list[int]:
    experiment = (_json(run_dir / "experiment.json") or {}).get("experiment") or {}
    if experiment.get("seeds"):
        return list(experiment["seeds"])
    named = sorted({int(m.group(1)) for n in dirs if (m := re.search(r"/seed-(-?\d+)$", n))})
    return named or [int(experiment.get("seed", 0))]


def _seed_numbers(done: dict[str, Path], condition: str, seed: int, stages: dict[str, str],
                  missing: list[str]) -> tuple[dict[str, Any], Path | None]:
    """One seed's training and evaluation numbers of a condition; notes what a finished stage lacks."""
    numbers: dict[str, Any] = {}
    train = stages.get("train")
    if train in done:
        summary = _json(done[train] / "summary.json")
        if summary is None:
            missing.append(f"{train}: summary.json is missing from {done[train].name}; its training numbers "
                           "are not reported (rerun the stage after deleting its stage.json)")
        else:
            numbers["train"] = {k: summary.get(k) for k in ("pairs", "training", "monitor", "seconds")}
        numbers["train_curve"] = _reward_curve(done[train] / "metrics.jsonl")
        numbers["monitor"] = rs.monitor_row(summary, numbers["train_curve"])
    evaluation = stages.get("eval")
    if evaluation not in done:
        return numbers, None
    folder = done[evaluation]
    numbers["jailbreak"] = {}
    for sub in sorted(folder.glob("jailbreak*")):
        metrics = _json(sub / "metrics.json")
        if metrics is None:
            missing.append(f"{evaluation}: {sub.name}/metrics.json is missing; that set is not reported")
        else:
            numbers["jailbreak"][sub.name] = metrics
            for judge, entry in (metrics.get("judges") or {}).items():
                if not (sub / entry.get("file", "")).is_file():
                    missing.append(f"{evaluation}: {sub.name}/{entry.get('file')} (the {judge} verdicts) is "
                                   "missing; that judge's rates and comparisons are not reported")
    for key, file in (("refusal", "refusal/metrics.json"), ("general", "general/results.json")):
        value = _json(folder / file)
        if value is not None:
            numbers[key] = value
        elif (folder / file).parent.exists():
            missing.append(f"{evaluation}: {file} is missing; it is not reported")
    if "refusal" in numbers and not (folder / "refusal" / "refusals.jsonl").is_file():
        missing.append(f"{evaluation}: refusal/refusals.jsonl is missing; XSTest rates are not reported")
    return numbers, folder


def collect(run_dir: Path, conditions: list[str], seeds: list[int] | None = None) -> dict[str, Any]:
    """Every number of the run, per condition and seed, with rates, comparisons and the separability test
    (missing keys where a stage did not run or has not finished, and a sentence in ``missing`` for each file
    a finished stage lacks)."""
    from safepref.conditions import CONDITION_KIND

    dirs = _stage_dirs(run_dir)
    seeds = seeds or _run_seeds(run_dir, dirs)
    done = {name: folder for name, folder in dirs.items() if (folder / "stage.json").exists()}
    missing: list[str] = []
    audit = _json(done["audit"] / "audit.json") if "audit" in done else None
    if "audit" in done and audit is None:
        missing.append("audit: audit.json is missing; separability is not reported")
    audit_by_set = {r["name"]: r for r in (audit or {}).get("sets", [])}
    rows: dict[str, Any] = {}
    eval_dirs: dict[str, dict[int, Path]] = {}
    prompt_sets: dict[str, str] = {}
    for condition in conditions:
        row: dict[str, Any] = {"kind": CONDITION_KIND[condition], "label": figs.label(condition)}
        if f"build/{condition}" in done:
            sheet = _json(done[f"build/{condition}"] / "datasheet.json")
            if sheet is None:
                missing.append(f"build/{condition}: datasheet.json is missing; the set's numbers are not reported")
            else:
                row["datasheet"] = {k: sheet.get(k) for k in ("rows", "prompts", "sources", "length", "reward",
                                                               "refusal", "drops")}
                if sheet.get("proxy"):  # the set only stands in for this condition: never shown as the real one
                    row["label"] += " (proxy)"
                    row["proxy"] = sheet["proxy"]
        trains = _seed_stages(dirs, f"train/{condition}", seeds)
        evals = _seed_stages(dirs, f"eval/{condition}", seeds)
        row["seeds"] = {}
        for seed in sorted(set(trains) | set(evals)):
            numbers, folder = _seed_numbers(done, condition, seed, {"train": trains.get(seed),
                                                                    "eval": evals.get(seed)}, missing)
            row["seeds"][str(seed)] = numbers
            if folder is not None:
                eval_dirs.setdefault(condition, {})[seed] = folder
            for sub, metrics in numbers.get("jailbreak", {}).items():
                prompt_sets.setdefault(sub, metrics.get("prompts") or metrics.get("answers_from") or sub)
        first = next(iter(row["seeds"].values()), {})
        for key in ("train", "train_curve", "refusal", "general"):
            if key in first:
                row[key] = first[key]
        if "jailbreak" in (first.get("jailbreak") or {}):
            row["jailbreak"] = first["jailbreak"]["jailbreak"]
        if condition in audit_by_set:
            row["audit"] = _audit_numbers(audit_by_set[condition])
        rows[condition] = row
    outcomes = rs.gather(eval_dirs)
    for condition, table in rs.rates(outcomes).items():
        rows[condition]["rates"] = table
    summary = {"run": str(run_dir), "seeds": seeds, "prompt_sets": dict(sorted(prompt_sets.items())),
               "conditions": rows, "comparisons": rs.comparisons(outcomes, conditions),
               "stage_seconds": {name: (_json(folder / "stage.json") or {}).get("seconds")
                                 for name, folder in done.items()},
               "missing_stages": sorted(set(dirs) - set(done) - {"report"}), "missing": missing}
    judges = _judges(summary)
    summary["primary_judge"] = judges[0] if judges else None
    summary["judge_validation"] = {j: judge_validation(j) for j in judges}
    if judges:
        points = {c: (r["audit"]["best_auc"], r["rates"][f"asr/jailbreak/{judges[0]}"]["rate"])
                  for c, r in rows.items() if (r.get("audit") or {}).get("best_auc") is not None
                  and figs.rate(r, f"asr/jailbreak/{judges[0]}")}
        summary["separability"] = {**rs.separability(points), "judge": judges[0]}
    return rs.finite(summary)


def judge_validation(judge: str) -> dict[str, Any] | None:
    """A judge's agreement with held-out human labels (``docs/validation/judges.json``), when known."""
    try:
        from safepref.evaluate.judges import judge_validation as lookup  # provided by the judges module
    except ImportError:
        return None
    try:
        return lookup(judge)
    except Exception:  # noqa: BLE001 - a broken validation file must not stop the report
        return None


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
    """ASR on the study's prompt set (pooled over seeds when there are several)."""
    entry = figs.rate(row, f"asr/jailbreak/{judge}")
    return entry["rate"] if entry else ((row.get("jailbreak") or {}).get("asr") or {}).get(judge)


def refusal_rate_of(row: dict[str, Any], detector: str = "opening") -> float | None:
    """Over-refusal: share of safe XSTest prompts refused (``opening``: a refusal phrase opens the answer)."""
    entry = figs.rate(row, f"over_refusal/{detector}")
    return entry["rate"] if entry else None


def compliance_rate_of(row: dict[str, Any], detector: str = "opening") -> float | None:
    entry = figs.rate(row, f"compliance/{detector}")
    return entry["rate"] if entry else None


# The judge a single-judge figure uses, first found wins: the study's rubric judge, then the trained
# classifiers, then keyword matching (which many small models saturate: they never use a refusal phrase).
PRIMARY_JUDGES = ("rubric", "llama-guard", "yes-no", "safety", "classifier", "hf-classifier", "keyword")


def _judges(summary: dict[str, Any]) -> list[str]:
    """Judges present in the run, the primary one (PRIMARY_JUDGES order) first."""
    judges: list[str] = []
    for row in summary["conditions"].values():
        for metric in row.get("rates") or {}:
            kind, folder, *rest = metric.split("/", 2)
            if kind == "asr" and folder == "jailbreak" and rest[0] not in judges:
                judges.append(rest[0])
    rank = {j.split(":")[0]: i for i, j in enumerate(PRIMARY_JUDGES)}
    return sorted(judges, key=lambda j: rank.get(j.split(":")[0], len(rank)))


# ------------------------------------------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _cell(entry: dict[str, Any] | None) -> str:
    """``0.44 [0.35, 0.54] n=100``: a rate, its 95% interval and n."""
    if not entry or entry.get("rate") is None:
        return "—"
    ci = entry.get("ci95")
    return f"{entry['rate']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] n={entry['n']}" if ci else f"{entry['rate']:.2f}"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _main_table(summary: dict[str, Any], judges: list[str]) -> list[str]:
    lines = ["| condition | kind | pairs | " + " | ".join(f"ASR ({j})" for j in judges)
             + " | over-refusal (XSTest safe) | compliance (XSTest unsafe) | best probe AUC (representation) "
             "| chosen − rejected length (tokens) |", "|---|---|---|" + "---|" * len(judges) + "---|---|---|---|"]
    for condition, row in summary["conditions"].items():
        sheet = row.get("datasheet") or {}
        audit = row.get("audit") or {}
        length = sheet.get("length") or {}
        gap = None
        if length.get("chosen_mean") is not None and length.get("rejected_mean") is not None:
            gap = length["chosen_mean"] - length["rejected_mean"]
        cue = f"{_fmt(audit.get('best_auc'))} ({audit.get('best')})" if audit.get("best") else "—"
        rates = row.get("rates") or {}
        lines.append(f"| {row.get('label', condition)} | {row['kind']} | {_fmt(sheet.get('rows'))} | "
                     + " | ".join(_cell(rates.get(f"asr/jailbreak/{j}")) for j in judges)
                     + f" | {_cell(rates.get('over_refusal/opening'))} | {_cell(rates.get('compliance/opening'))}"
                     f" | {cue} | {_fmt(gap, 1)} |")
    return lines


def _seed_table(summary: dict[str, Any], judge: str) -> list[str]:
    seeds = summary["seeds"]
    lines = ["", f"### ASR ({judge}) per seed", "", "| condition | " + " | ".join(f"seed {s}" for s in seeds)
             + " |", "|---|" + "---|" * len(seeds)]
    for row in summary["conditions"].values():
        entry = figs.rate(row, f"asr/jailbreak/{judge}") or {}
        if "per_seed" not in entry and entry:  # one evaluation serves every seed (SFT, greedy)
            lines.append(f"| {row.get('label')} | {_cell(entry)} (one evaluation, every seed) |"
                         + " |" * (len(seeds) - 1))
            continue
        per_seed = entry.get("per_seed") or {}
        lines.append(f"| {row.get('label')} | " + " | ".join(_cell(per_seed.get(str(s))) for s in seeds) + " |")
    return lines


def _sets_table(summary: dict[str, Any], judge: str) -> list[str]:
    sets = summary["prompt_sets"]
    columns = [*sets, "pooled"]
    lines = ["", f"## ASR ({judge}) per prompt set", "",
             "| condition | " + " | ".join(sets.get(c, "all sets pooled") for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for row in summary["conditions"].values():
        lines.append(f"| {row.get('label')} | "
                     + " | ".join(_cell(figs.rate(row, f"asr/{c}/{judge}")) for c in columns) + " |")
    return lines


def _metric_title(metric: str, summary: dict[str, Any]) -> str:
    kind, *rest = metric.split("/")
    if kind == "asr":
        where = "all prompt sets pooled" if rest[0] == "pooled" else summary["prompt_sets"].get(rest[0], rest[0])
        return f"ASR ({rest[1]}) on {where}"
    return {"over_refusal": "over-refusal on safe XSTest prompts",
            "compliance": "compliance on unsafe XSTest prompts"}[kind] + f" ({rest[0]} detector)"


def _comparison_table(summary: dict[str, Any], metric: str) -> list[str]:
    rows = [r for r in summary["comparisons"] if r["metric"] == metric and r.get("difference") is not None]
    if not rows:
        return []
    labels = {c: r.get("label", c) for c, r in summary["conditions"].items()}
    lines = ["", f"### {_metric_title(metric, summary)}", "",
             f"Holm correction over the {rows[0]['holm_family']} comparisons of this table, within each seed.", "",
             "| condition | against | difference [95% CI] | prompts × seeds | McNemar p per seed (a only / b only) "
             "| Holm p | |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        ci = row["ci95"]
        tests = row["mcnemar"]
        mark = ("*" if row["excludes_zero"] else "") + ("†" if row["holm_significant_seeds"] == len(tests) else "")
        lines.append(
            f"| {labels.get(row['condition'])} | {labels.get(row['baseline'])} | {row['difference']:+.3f} "
            f"[{ci[0]:+.3f}, {ci[1]:+.3f}] | {row['prompts']} × {len(row['seeds'])} | "
            + "; ".join(f"{_p(t['p'])} ({t['only_a']}/{t['only_b']})" for t in tests.values()) + " | "
            + "; ".join(_p(t["p_holm"]) for t in tests.values()) + f" | {mark} |")
    return lines


def _comparisons(summary: dict[str, Any], judges: list[str]) -> list[str]:
    if not summary["comparisons"]:
        return []
    metrics = [f"asr/jailbreak/{j}" for j in judges]
    if len(summary["prompt_sets"]) > 1 and judges:
        metrics.append(f"asr/pooled/{judges[0]}")
    metrics += ["compliance/opening", "over_refusal/opening"]
    lines = ["", "## Paired comparisons", "",
             "Each condition against SFT and against Self+RM on the same prompts (difference = condition minus "
             "the other). The interval is a paired bootstrap over prompts and seeds (2,000 resamples); McNemar "
             "is the exact test on one seed's discordant prompts (a only: harmful/refused only under the "
             "condition; b only: only under the other). **\\*** the 95% interval excludes zero (not corrected "
             "for multiplicity); **†** Holm-adjusted McNemar p < 0.05 in every seed (Holm over the table's "
             "comparisons, within each seed). Tables for the other judges, sets and detectors are in "
             "`summary.json` (`comparisons`)."]
    for metric in metrics:
        lines += _comparison_table(summary, metric)
    return lines


def _monitor_table(summary: dict[str, Any]) -> list[str]:
    lines = ["", "## DPO reward-hacking monitor", "",
             f"First step at which reward accuracy, averaged over at least {rs.MIN_PAIRS} training pairs "
             "(a moving mean over logged batches), passes 0.95; the raw one-batch step beside it. Sets differ "
             "in size, so steps and pairs are given for each run.", "",
             "| condition | seed | pairs in set | steps | batch | pairs seen | first step > 0.95 (window, pairs) "
             "| raw first step | reward acc. final | chosen log-p drift | length gap (batch mean) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    count = 0
    for row in summary["conditions"].values():
        for seed, numbers in (row.get("seeds") or {}).items():
            m, mon = numbers.get("monitor"), (numbers.get("train") or {}).get("monitor") or {}
            if not m:
                continue
            count += 1
            window = f"({m.get('window_rows')}, {m.get('window_pairs')})" if m.get("window_rows") else ""
            lines.append(
                f"| {row.get('label')} | {seed} | {_fmt(m['pairs'])} | {_fmt(m['steps'])} | {_fmt(m['global_batch'])}"
                f" | {_fmt(m['pairs_seen'])} | {_fmt(m.get('first_step_above_smoothed'))} {window} | "
                f"{_fmt(m.get('first_step_above_raw'))} | {_fmt((mon.get('accuracy') or {}).get('final'))} | "
                f"{_fmt((mon.get('drift') or {}).get('chosen_final'))} | "
                f"{_fmt((mon.get('length') or {}).get('batch_gap_mean'), 1)} |")
    return lines if count else []


def _validation_lines(summary: dict[str, Any], judges: list[str]) -> list[str]:
    lines = []
    for judge in judges:
        agreement = (summary.get("judge_validation") or {}).get(judge)
        if agreement is None:  # the judge's own held-out numbers, when it carries them (classifier)
            for row in summary["conditions"].values():
                described = (((row.get("jailbreak") or {}).get("judges") or {}).get(judge) or {}).get("judge") or {}
                if described.get("validation"):
                    agreement = described["validation"]
                    break
        if agreement:
            # a number, or a rate entry {"value", "k", "n", "ci"} (evaluate.validate)
            values = {k: v.get("value") if isinstance(v, dict) else v for k, v in agreement.items()}
            shown = {k: values[k] for k in ("n", "accuracy", "kappa", "precision", "recall", "f1")
                     if isinstance(values.get(k), int | float)}
            where = f" ({agreement['dataset']})" if agreement.get("dataset") else ""
            accuracy = agreement.get("accuracy")
            ci = accuracy.get("ci") if isinstance(accuracy, dict) else agreement.get("ci")
            interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list | tuple) and len(ci) == 2 else ""
            lines.append(f"- **{judge}**: agreement with held-out human labels{where}: "
                         + ", ".join(f"{k} {_fmt(v, 3) if isinstance(v, float) else v}"
                                     + (interval if k == "accuracy" else "") for k, v in shown.items()))
        else:
            lines.append(f"- **{judge}**: no validated agreement on held-out labels is known")
    return ["", "Judges (their agreement with human labels, beside their ASR):", "", *lines] if lines else []


def markdown(summary: dict[str, Any], figures: list[str], name: str) -> str:
    judges = _judges(summary)
    seeds = summary.get("seeds") or []
    pooled = len(seeds) > 1
    lines = [f"# safepref report: {name}", "",
             "Conditions in the order of the study's figure. Kind: multi = chosen and rejected from different "
             "models, human = human-labelled pairs, self = the target's own samples ranked by a reward model.",
             "", f"Seeds: {', '.join(map(str, seeds))}. Every rate: the rate, its 95% interval and n (answers). "
             + ("Seeds are pooled: n counts answers over seeds; the interval is a bootstrap over prompts and "
                "seeds. SFT is evaluated once (greedy decoding does not depend on the seed)." if pooled else
                "One seed: Wilson interval."),
             "Over-refusal and compliance use the `opening` detector (a refusal phrase opens the answer).", ""]
    lines += _main_table(summary, judges)
    lines += _validation_lines(summary, judges)
    if pooled and judges:
        lines += _seed_table(summary, judges[0])
    if len(summary.get("prompt_sets") or {}) > 1 and judges:
        lines += _sets_table(summary, judges[0])
    lines += _comparisons(summary, judges)
    sep = summary.get("separability") or {}
    if sep.get("n"):
        rho = "—" if sep["rho"] is None else f"{sep['rho']:+.2f}"
        lines += ["", "## Separability against ASR", "",
                  f"Spearman's rho between each set's best probe AUC and its ASR ({sep['judge']}, study set): "
                  f"{rho}, permutation p = {_p(sep['p'])}, n = {sep['n']} sets ({sep['method']})."]
    verdicts = [(r.get("label"), (r.get("audit") or {}).get("verdict")) for r in summary["conditions"].values()]
    if any(v for _, v in verdicts):
        lines += ["", "## Separability audit verdicts", ""]
        lines += [f"- **{c}**: {v if isinstance(v, str) else json.dumps(v)}" for c, v in verdicts if v]
    lines += _monitor_table(summary)
    if summary["missing_stages"] or summary.get("missing"):
        lines += ["", "## Missing", ""]
        if summary["missing_stages"]:
            lines.append("- stages without results: " + ", ".join(summary["missing_stages"]))
        lines += [f"- {note}" for note in summary.get("missing") or []]
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    lines += ["", "Every number above is in `summary.json`; each stage's own outputs (with every answer and "
              "verdict) are under `stages/`."]
    return "\n".join(lines) + "\n"


def render_summary(summary: dict[str, Any], out: Path, name: str) -> list[str]:
    """Figures, ``summary.json`` and ``report.md`` from a collected summary; returns the figure files."""
    judges = _judges(summary)
    primary = judges[0] if judges else "keyword"
    figures = []
    for file, plot in (("asr.png", lambda s, p: figs.plot_asr(s, p, judges)),
                       ("asr_sets.png", lambda s, p: figs.plot_sets(s, p, primary)),
                       ("refusal.png", figs.plot_refusal),
                       ("separability_vs_asr.png", lambda s, p: figs.plot_separability(s, p, primary)),
                       ("reward_accuracy.png", figs.plot_reward_accuracy), ("general.png", figs.plot_general)):
        if plot(summary, out / file):
            figures.append(file)
    summary["figures"] = figures
    write_json(out / "summary.json", summary)
    write_text(out / "report.md", markdown(summary, figures, name))
    return figures


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, conditions: list[str] | None = None,
                 name: str | None = None, seeds: list[int] | None = None) -> dict[str, Any]:
    """Write report.md, the figures and summary.json into ``out_dir`` (default: the run folder)."""
    from safepref.conditions import CONDITION_ORDER, EXTRA_CONDITIONS

    run_dir = Path(run_dir)
    out = Path(out_dir or run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if conditions is None:
        experiment = _json(run_dir / "experiment.json") or {}
        conditions = (experiment.get("experiment") or {}).get("conditions") or CONDITION_ORDER
        name = name or (experiment.get("experiment") or {}).get("name")
    ordered = [c for c in [*CONDITION_ORDER, *EXTRA_CONDITIONS] if c in conditions]
    summary = collect(run_dir, ordered, seeds)
    figures = render_summary(summary, out, name or run_dir.name)
    if out != run_dir:  # the report is also visible at the top of the run folder
        for file in ["report.md", "summary.json", *figures]:
            (run_dir / file).write_bytes((out / file).read_bytes())
    from safepref.report_html import write_html_report  # report.html (also refreshes the model cards)

    write_html_report(run_dir, out, summary, name or run_dir.name)
    return {"figures": figures, "conditions": len(ordered), "missing_stages": summary["missing_stages"],
            "missing": summary["missing"]}
