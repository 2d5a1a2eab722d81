"""Reward-hacking monitor: the training curves that show DPO learning a superficial cue, summarised.

The study's finding is that DPO on multi-model pairs learns *which model wrote the answer* (style, length)
instead of *which answer is safe*. That shows up in the training curves before any evaluation:

- reward accuracy saturates early (the implicit reward separates chosen from rejected after a handful of
  steps: the pairs are separable by something easy);
- the margin keeps growing while the chosen answers' log-probability *falls* (DPO widens the gap by pushing
  both sides down: "likelihood displacement");
- the per-pair margin tracks the chosen-minus-rejected length gap (the model learned "longer wins").

TRL logs ``rewards/chosen``, ``rewards/rejected`` (beta times the policy-minus-reference log-ratio, summed over
the answer's tokens), ``rewards/accuracies``, ``rewards/margins`` and ``logps/chosen``/``logps/rejected``; the
trainer in ``dpo_setup.py`` adds ``length/chosen``, ``length/rejected`` and ``length/gap`` (answer tokens per batch).
``MetricsWriter`` writes each logged row to ``metrics.jsonl``; the pure functions below turn those rows into
``summary.json``'s ``monitor`` section, and ``plot_curves`` draws them.

Drift is measured from the reward columns, not from the raw log-probs: ``rewards/chosen / beta`` is the change
of the chosen answers' log-probability against the reference model *on the same batch*, so it does not jump
with batch composition the way ``logps/chosen`` (a sum over however many tokens the batch holds) does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safepref.records import write_jsonl

# Thresholds behind the warnings in the summary; named so a report can say what triggered a flag.
EARLY_FRACTION = 0.25  # reward accuracy saturating within this fraction of training is "early"
LENGTH_CORRELATION = 0.3  # |Pearson r| between per-pair margin and length gap worth a warning
LENGTH_SKEW = 0.7  # chosen longer (or shorter) in at least this fraction of pairs

ACCURACY = "rewards/accuracies"
MARGIN = "rewards/margins"
CHOSEN_REWARD = "rewards/chosen"
REJECTED_REWARD = "rewards/rejected"


# ------------------------------------------------------------------------------------------ pure functions


def series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of the rows that hold ``key`` (NaN values skipped)."""
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float) and not math.isnan(value):
            steps.append(int(row["step"]))
            values.append(float(value))
    return steps, values


def rolling_mean(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start)."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def first_step_above(steps: Sequence[int], values: Sequence[float], threshold: float,
                     window: int = 1) -> int | None:
    """First step whose (trailing ``window``-mean) value is strictly above ``threshold``; None if never.

    With ``window > 1`` the mean needs ``window`` points before it can count, so a single lucky batch at the
    start does not pass for saturation.
    """
    smoothed = rolling_mean(values, window)
    for i, (step, value) in enumerate(zip(steps, smoothed, strict=True)):
        if i + 1 >= window and value > threshold:
            return step
    return None


def first_step_above_pairs(steps: Sequence[int], values: Sequence[float], pairs_per_step: int,
                           threshold: float = 0.95, min_pairs: int = 64) -> dict[str, Any]:
    """First step whose reward accuracy, averaged over the last logged rows covering at least ``min_pairs``
    training pairs, is above ``threshold``.

    One logged row of TRL's ``rewards/accuracies`` is the mean over one batch (``pairs_per_step`` pairs, times
    the steps between rows when logging is sparser), so a single lucky batch of 4 pairs at 1.00 says little;
    a mean over 64 pairs has a standard error of at most 0.06. Returns the step (None if never), the window
    in logged rows and in pairs, and the raw (one-row) first step for comparison.
    """
    gaps = sorted(b - a for a, b in zip(steps, steps[1:], strict=False) if b > a)
    every = gaps[len(gaps) // 2] if gaps else 1  # median step gap between logged rows
    pairs_per_row = max(1, pairs_per_step * every)
    window = max(1, math.ceil(min_pairs / pairs_per_row))
    return {"first_step_above_smoothed": first_step_above(steps, values, threshold, window),
            "first_step_above_raw": first_step_above(steps, values, threshold, 1),
            "window_rows": window, "window_pairs": window * pairs_per_row}


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ``ys`` on ``xs``; None with fewer than two distinct x."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None when either side is constant or has fewer than 3 points."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share their mean rank
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson on ranks, ties averaged)."""
    return pearson(_ranks(xs), _ranks(ys)) if len(xs) >= 3 else None


def _tail_mean(values: Sequence[float], window: int) -> float | None:
    return sum(values[-window:]) / len(values[-window:]) if values else None


def length_stats(chosen: Sequence[int], rejected: Sequence[int]) -> dict[str, Any]:
    """Answer lengths (tokens) of a pair set: means, mean gap (chosen - rejected), how often chosen is longer."""
    n = len(chosen)
    if n == 0:
        return {"pairs": 0}
    gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "pairs": n,
        "chosen_mean": sum(chosen) / n,
        "rejected_mean": sum(rejected) / n,
        "gap_mean": sum(gaps) / n,
        "chosen_longer_fraction": sum(g > 0 for g in gaps) / n,
        "chosen_shorter_fraction": sum(g < 0 for g in gaps) / n,
    }


def summarize_curves(rows: Sequence[dict[str, Any]], beta: float, threshold: float = 0.95,
                     window: int = 5, total_steps: int | None = None, pairs_per_step: int | None = None,
                     min_pairs: int = 64) -> dict[str, Any]:
    """The monitor's numbers from logged rows (each with ``step`` and TRL's reward columns).

    - ``accuracy``: first step above ``threshold`` (raw and smoothed: a mean over ``window`` logged rows, or,
      when ``pairs_per_step`` is given, over enough rows to cover ``min_pairs`` pairs, whichever is more),
      final (mean of the last ``window`` rows) and max;
    - ``margin``: first, final, max, slope per step, growth (final - first);
    - ``drift``: change of the chosen / rejected answers' log-probability against the reference (nats per
      answer; ``rewards/* / beta``), final and lowest; and the raw ``logps/*`` first and final;
    - ``length``: mean batch length gap and its correlation with the batch margin across steps.
    """
    acc_steps, acc = series(rows, ACCURACY)
    margin_steps, margins = series(rows, MARGIN)
    _, chosen_reward = series(rows, CHOSEN_REWARD)
    _, rejected_reward = series(rows, REJECTED_REWARD)
    last_step = max((int(r["step"]) for r in rows), default=0)
    total = total_steps or last_step or None

    first_raw = first_step_above(acc_steps, acc, threshold, 1)
    smoothing, pairs_per_row = window, None
    if pairs_per_step:  # small batches: a mean over 5 batches of 4 pairs is still noise
        found = first_step_above_pairs(acc_steps, acc, pairs_per_step, threshold, min_pairs)
        smoothing = max(window, found["window_rows"])
        pairs_per_row = found["window_pairs"] // found["window_rows"]
    first_smooth = first_step_above(acc_steps, acc, threshold, smoothing)
    summary: dict[str, Any] = {
        "logged_steps": len(rows),
        "last_step": last_step,
        "total_steps": total,
        "accuracy": {
            "threshold": threshold,
            "first_step_above": first_raw,
            "first_step_above_smoothed": first_smooth,
            "smoothing_window": smoothing,
            "smoothing_pairs": smoothing * pairs_per_row if pairs_per_row else None,
            "first_step_fraction": (first_smooth / total) if (first_smooth and total) else None,
            "final": _tail_mean(acc, window),
            "max": max(acc) if acc else None,
        },
        "margin": {
            "first": margins[0] if margins else None,
            "final": _tail_mean(margins, window),
            "max": max(margins) if margins else None,
            "slope_per_step": slope(margin_steps, margins),
            "growth": (_tail_mean(margins, window) - margins[0]) if margins else None,
        },
    }
    drift_chosen = [v / beta for v in chosen_reward]
    drift_rejected = [v / beta for v in rejected_reward]
    _, logps_chosen = series(rows, "logps/chosen")
    _, logps_rejected = series(rows, "logps/rejected")
    summary["drift"] = {
        "chosen_final": _tail_mean(drift_chosen, window),
        "rejected_final": _tail_mean(drift_rejected, window),
        "chosen_min": min(drift_chosen) if drift_chosen else None,
        "rejected_min": min(drift_rejected) if drift_rejected else None,
        "logps_chosen_first": logps_chosen[0] if logps_chosen else None,
        "logps_chosen_final": _tail_mean(logps_chosen, window),
        "logps_rejected_first": logps_rejected[0] if logps_rejected else None,
        "logps_rejected_final": _tail_mean(logps_rejected, window),
    }
    gap_steps, gaps = series(rows, "length/gap")
    by_step = dict(zip(margin_steps, margins, strict=True))
    paired = [(g, by_step[s]) for s, g in zip(gap_steps, gaps, strict=True) if s in by_step]
    summary["length"] = {
        "batch_gap_mean": (sum(gaps) / len(gaps)) if gaps else None,
        "batch_gap_vs_margin_pearson": pearson([p[0] for p in paired], [p[1] for p in paired]),
    }
    return summary


def probe_summary(margins: Sequence[float], gaps: Sequence[float]) -> dict[str, Any]:
    """Per-pair margins after training against the pairs' length gaps (chosen - rejected tokens).

    ``accuracy_chosen_longer`` vs ``accuracy_chosen_shorter``: a model that learned "longer wins" is right
    when the chosen answer is the longer one and wrong when it is the shorter one.
    """
    n = len(margins)
    longer = [m for m, g in zip(margins, gaps, strict=True) if g > 0]
    shorter = [m for m, g in zip(margins, gaps, strict=True) if g < 0]
    return {
        "pairs": n,
        "accuracy": (sum(m > 0 for m in margins) / n) if n else None,
        "margin_mean": (sum(margins) / n) if n else None,
        "margin_vs_length_gap_pearson": pearson(gaps, margins),
        "margin_vs_length_gap_spearman": spearman(gaps, margins),
        "accuracy_chosen_longer": (sum(m > 0 for m in longer) / len(longer)) if longer else None,
        "accuracy_chosen_shorter": (sum(m > 0 for m in shorter) / len(shorter)) if shorter else None,
    }


def warnings_for(monitor: dict[str, Any]) -> list[str]:
    """Plain-language warnings from a monitor summary (``summarize_curves`` plus optional ``data_lengths``
    and ``probe``). Thresholds: ``EARLY_FRACTION``, ``LENGTH_CORRELATION``, ``LENGTH_SKEW``."""
    notes = []
    acc = monitor.get("accuracy", {})
    fraction = acc.get("first_step_fraction")
    if fraction is not None and fraction <= EARLY_FRACTION:
        notes.append(
            f"reward accuracy passed {acc['threshold']} at step {acc['first_step_above_smoothed']} "
            f"({fraction:.0%} of training): chosen and rejected are separated by something easy to learn; "
            "check the pairs for a style or length cue (safepref audit)")
    drift = monitor.get("drift", {})
    margin = monitor.get("margin", {})
    if (drift.get("chosen_final") is not None and drift["chosen_final"] < 0
            and (margin.get("final") or 0) > 0):
        notes.append(
            f"the chosen answers became less likely ({drift['chosen_final']:+.2f} nats per answer against the "
            f"reference) while the margin grew: DPO widens the gap by pushing both sides down "
            f"(rejected {drift['rejected_final']:+.2f})")
    lengths = monitor.get("data_lengths", {})
    skew = max(lengths.get("chosen_longer_fraction", 0.0), lengths.get("chosen_shorter_fraction", 0.0))
    if lengths.get("pairs") and skew >= LENGTH_SKEW:
        side = "longer" if lengths["chosen_longer_fraction"] >= lengths["chosen_shorter_fraction"] else "shorter"
        notes.append(f"the chosen answer is the {side} one in {skew:.0%} of pairs "
                     f"(mean gap {lengths['gap_mean']:+.1f} tokens): length alone predicts the label")
    probe = monitor.get("probe") or {}
    r = probe.get("margin_vs_length_gap_pearson")
    if r is not None and abs(r) >= LENGTH_CORRELATION:
        leaning = "longer" if r > 0 else "shorter"
        notes.append(f"after training, per-pair margins track the length gap (Pearson r = {r:+.2f} over "
                     f"{probe['pairs']} pairs): the learned reward favours the {leaning} answer")
    return notes


# ---------------------------------------------------------------------------------------------- callback


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class MetricsWriter(_callback_base()):  # type: ignore[misc]
    """Writes ``metrics.jsonl`` (every logged training row, plus ``elapsed_s`` of this run) at each log step.

    On resume the rows logged before the checkpoint come from the trainer state, so the file always holds the
    whole run's history once. Only the main process writes. ``seconds`` / ``steps_this_run`` measure the
    training loop alone (model loading and data preparation excluded) for the throughput figure.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self.started = 0.0
        self.seconds = 0.0
        self.start_step = 0
        self.steps_this_run = 0

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback signature
        self.started = time.time()
        self.start_step = state.global_step
        self.rows = [dict(row) for row in state.log_history if "loss" in row and "step" in row]

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if not logs or "loss" not in logs:  # the final train_runtime row, or evaluation rows
            return
        row = {"step": state.global_step, "epoch": state.epoch,
               "elapsed_s": round(time.time() - self.started, 3), **logs}
        self.rows.append(row)
        if state.is_world_process_zero:
            write_jsonl(self.path, self.rows)

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.seconds = time.time() - self.started
        self.steps_this_run = state.global_step - self.start_step


# ---------------------------------------------------------------------------------------------- plot


def plot_curves(rows: Sequence[dict[str, Any]], monitor: dict[str, Any], path: str | Path, beta: float,
                probe_points: tuple[Sequence[float], Sequence[float]] | None = None, title: str = "") -> None:
    """A 2x3 PNG: reward accuracy, margin, log-prob drift, loss, batch length gap, and (if probed) per-pair
    margin against length gap."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    threshold = monitor.get("accuracy", {}).get("threshold", 0.95)
    window = monitor.get("accuracy", {}).get("smoothing_window", 5)
    first = monitor.get("accuracy", {}).get("first_step_above_smoothed")

    ax = axes[0, 0]
    steps, acc = series(rows, ACCURACY)
    ax.plot(steps, acc, alpha=0.35, label="per log step")
    ax.plot(steps, rolling_mean(acc, window), label=f"mean of {window}")
    ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"{threshold}")
    if first is not None:
        ax.axvline(first, color="red", linewidth=1)
    ax.set_title("reward accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    steps, margins = series(rows, MARGIN)
    ax.plot(steps, margins)
    ax.set_title("reward margin (beta x log-ratio gap)")

    ax = axes[0, 2]
    for key, label in ((CHOSEN_REWARD, "chosen"), (REJECTED_REWARD, "rejected")):
        steps, values = series(rows, key)
        ax.plot(steps, [v / beta for v in values], label=label)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_title("log-prob drift vs reference (nats/answer)")
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    steps, loss = series(rows, "loss")
    ax.plot(steps, loss)
    ax.set_title("loss")

    ax = axes[1, 1]
    steps, gaps = series(rows, "length/gap")
    ax.plot(steps, gaps)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_title("length gap per batch (chosen - rejected tokens)")

    ax = axes[1, 2]
    if probe_points and probe_points[0]:
        gaps_p, margins_p = probe_points
        ax.scatter(gaps_p, margins_p, s=8, alpha=0.6)
        ax.axhline(0, color="grey", linewidth=0.8)
        r = (monitor.get("probe") or {}).get("margin_vs_length_gap_pearson")
        ax.set_title(f"per-pair margin vs length gap (r={r:+.2f})" if r is not None else
                     "per-pair margin vs length gap")
        ax.set_xlabel("chosen - rejected tokens")
    else:
        ax.text(0.5, 0.5, "no per-pair probe", ha="center", va="center")
        ax.set_axis_off()
    for ax in axes.flat:
        if ax.get_xlabel() == "" and ax.axison:
            ax.set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
