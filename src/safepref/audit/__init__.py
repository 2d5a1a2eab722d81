"""Separability audit: will this preference set be reward-hacked?

Before spending GPU hours on DPO, measure how easily chosen and rejected can be told apart, and by what cue.
The study behind safepref found that when the two sides come from different models a linear classifier
separates them almost perfectly, and DPO then learns that style cue instead of safety. The audit reads top
to bottom:

1. load each set (a ``pairs.jsonl``, a folder holding one, or a source spec such as ``pku-paper:200``) and
   check it (no pair with identical sides, at least as many prompts as folds);
2. for every representation (``safepref.audit.representations``), a prompt-grouped cross-validated
   logistic-regression probe (``safepref.audit.probes``): accuracy, ROC AUC, pair accuracy, 95% CIs;
3. the reference model's log-probability margin between chosen and rejected (``safepref.audit.margin``);
4. plain descriptive cue statistics (length, refusal rate, top words) and a verdict naming the cheapest cue
   that explains the separation (``safepref.audit.report``);
5. one report for all sets side by side: ``audit.json``, ``audit.md``, ``audit.png``, ``margins.jsonl``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safepref import provenance
from safepref.audit.probes import check_folds, cross_validate
from safepref.audit.representations import (
    AuditContext,
    Example,
    HiddenStates,
    Representation,
    TargetModel,
    pair_examples,
    parse_representation,
    top_words,
)
from safepref.config import field, require
from safepref.errors import DataError
from safepref.records import PreferencePair

log = logging.getLogger(__name__)

AUDIT_VERSION = "audit-v1"  # bump whenever the numbers for the same inputs could change
DEFAULT_REPRESENTATIONS = ("hidden:auto", "minilm", "length", "refusal", "tfidf")

__all__ = ["AUDIT_VERSION", "AuditConfig", "audit_set", "load_set", "run_audit", "validate_pairs"]


@dataclass
class AuditConfig:
    representations: list[str] = field(default_factory=lambda: list(DEFAULT_REPRESENTATIONS),
                                       help="probe representations by name (see safepref.audit.representations)")
    model: str | None = field("smollm2-135m-instruct",
                              help="target (= reference) model for hidden states and the margin; None = skip")
    folds: int = field(5, help="cross-validation folds, grouped by prompt")
    seed: int = field(0, help="seed for fold assignment, the probes and the bootstrap")
    C: float = field(1.0, help="inverse L2 strength of the logistic regression (smaller = stronger)")
    bootstrap: int = field(1000, help="bootstrap resamples (over prompts) for the 95% CIs; 0 = no CIs")
    margin: bool = field(True, help="compute the reference model's log-prob margin (needs model)")
    max_pairs: int | None = field(None, help="audit only the first N pairs of each set")
    device: str = field("auto", help="device of the target model: auto, cpu, cuda, mps")
    dtype: str = field("auto", help="dtype of the target model: auto, float32, bfloat16")
    batch_size: int = field(8, help="sequences per forward batch of the target model")
    max_length: int = field(512, help="prompt + response tokens kept (the response is cut at the end)")
    prompt_format: str = field("chat", help="chat (chat template, as DPO on conversational data), raw or alpaca: "
                                            "as the training that follows formats prompts")

    def __post_init__(self) -> None:
        require(len(self.representations) > 0, "representations", "give at least one")
        parsed = [parse_representation(name) for name in self.representations]  # ConfigError on unknown
        labels = [r.spec for r in parsed]
        require(len(set(labels)) == len(labels), "representations", f"listed twice: {labels}")
        require(self.folds >= 2, "folds", "must be at least 2")
        require(self.C > 0, "C", "must be positive")
        require(self.bootstrap >= 0, "bootstrap", "must be >= 0")
        require(self.max_pairs is None or self.max_pairs > 0, "max_pairs", "must be positive")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.max_length >= 8, "max_length", "must be at least 8")
        require(self.prompt_format in ("chat", "raw", "alpaca"), "prompt_format", "must be chat, raw or alpaca")
        needs_model = self.margin or any(isinstance(r, HiddenStates) for r in parsed)
        require(self.model is not None or not needs_model, "model",
                "hidden-state probes and the reference margin need a target model (or pass --no-margin and "
                "drop hidden:*)")

    def parsed(self) -> list[Representation]:
        return [parse_representation(name) for name in self.representations]


# ----------------------------------------------------------------------------------------------- inputs


def load_set(spec: str) -> tuple[list[PreferencePair], str]:
    """Pairs from a ``pairs.jsonl`` file, a folder holding one, or a source spec (``pku-paper:200``).

    Files are read as ``train`` reads them: safepref pair records, or plain prompt/chosen/rejected columns."""
    from safepref.sources import load_pairs

    path = Path(spec).expanduser()
    if path.is_dir():
        candidate = path / "pairs.jsonl"
        if not candidate.exists():
            raise DataError(f"folder {path} has no pairs.jsonl")
        return load_pairs(str(candidate))[0], str(candidate)
    if path.is_file():
        return load_pairs(str(path))[0], str(path)
    pairs, _ = load_pairs(spec)
    return pairs, spec


def validate_pairs(pairs: list[PreferencePair], name: str, folds: int) -> None:
    """Raises DataError for pairs whose two sides are the same text, or fewer prompts than folds."""
    identical = [i for i, p in enumerate(pairs) if p.chosen_text.strip() == p.rejected_text.strip()]
    if identical:
        first = pairs[identical[0]]
        raise DataError(
            f"set '{name}': {len(identical)} of {len(pairs)} pairs have identical chosen and rejected text "
            f"(first: pair #{identical[0] + 1}, prompt_id {first.prompt_id}); such pairs carry no preference "
            f"and make the two classes overlap by construction: remove them before auditing")
    try:
        check_folds(np.array([p.prompt_id for p in pairs]), folds)
    except DataError as exc:
        raise DataError(f"set '{name}': {len(pairs)} pairs, {exc}") from None


# ------------------------------------------------------------------------------------------------ audit


def cue_statistics(pairs: list[PreferencePair]) -> dict[str, Any]:
    """Descriptive numbers behind the cues: lengths, refusal rates, where each side came from."""
    from safepref.refusal import GCG_REFUSAL_PHRASES_V1, is_refusal

    chosen_len = np.array([len(p.chosen_text) for p in pairs])
    rejected_len = np.array([len(p.rejected_text) for p in pairs])
    chosen_ref = np.array([is_refusal(p.chosen_text, phrases=GCG_REFUSAL_PHRASES_V1) for p in pairs])
    rejected_ref = np.array([is_refusal(p.rejected_text, phrases=GCG_REFUSAL_PHRASES_V1) for p in pairs])

    def source(meta: dict[str, Any]) -> str:
        src = meta.get("source") or {}
        return str(src.get("model") or src.get("name") or "?") if isinstance(src, dict) else str(src)

    return {
        "length": {
            "chosen_median_chars": float(np.median(chosen_len)),
            "rejected_median_chars": float(np.median(rejected_len)),
            "share_chosen_longer": float((chosen_len > rejected_len).mean()),
        },
        "refusal": {
            "phrase_list": getattr(GCG_REFUSAL_PHRASES_V1, "name", "GCG_REFUSAL_PHRASES_V1"),
            "chosen_refusal_rate": float(chosen_ref.mean()),
            "rejected_refusal_rate": float(rejected_ref.mean()),
        },
        "sources": {
            "chosen": dict(Counter(source(p.chosen_meta) for p in pairs).most_common(3)),
            "rejected": dict(Counter(source(p.rejected_meta) for p in pairs).most_common(3)),
            "recipe": dict(Counter(p.recipe or "?" for p in pairs).most_common(3)),
        },
    }


def audit_set(name: str, pairs: list[PreferencePair], config: AuditConfig, context: AuditContext,
              source: str = "") -> dict[str, Any]:
    """Probes, margin, cue statistics and verdict for one set (already validated)."""
    from safepref.audit.report import verdict

    started = time.perf_counter()
    examples: list[Example] = pair_examples(pairs)
    labels = np.array([e.label for e in examples])
    groups = np.array([e.group for e in examples])
    pair_ids = np.array([e.pair for e in examples])
    result: dict[str, Any] = {
        "name": name, "source": source, "n_pairs": len(pairs), "n_prompts": len(set(groups.tolist())),
        "cues": cue_statistics(pairs), "representations": [], "unavailable": {}, "timings_s": {},
    }
    try:
        result["cues"]["tfidf_top_words"] = top_words([e.response for e in examples], labels)
    except ValueError:  # no word occurs in two answers: nothing to report
        result["cues"]["tfidf_top_words"] = {"chosen": [], "rejected": []}
    for representation in config.parsed():
        t0 = time.perf_counter()
        features = representation.features(examples, context)
        t1 = time.perf_counter()
        probes = []
        for label, X in features.items():
            try:
                probe = cross_validate(X, labels, groups, pair_ids,
                                       lambda r=representation: r.estimator(config.C, config.seed),
                                       folds=config.folds, seed=config.seed, n_bootstrap=config.bootstrap,
                                       name=label)
            except ValueError as exc:  # e.g. tf-idf on a small set whose answers share no word: n/a, not fatal
                log.warning("set '%s': representation %s cannot be probed (n/a): %s", name, label, exc)
                result["unavailable"][label] = str(exc)
                continue
            probes.append(probe.as_dict())
        if not probes:
            continue
        best = max(probes, key=lambda p: p["auc"])
        result["representations"].append({
            "spec": representation.spec, "family": representation.family,
            "description": representation.description, "best": best, "probes": probes,
        })
        result["timings_s"][representation.spec] = {"features": round(t1 - t0, 2),
                                                    "probes": round(time.perf_counter() - t1, 2)}
        log.info("%s: %s AUC %.3f", name, best["representation"], best["auc"])
    if config.margin:
        from safepref.audit.margin import reference_margin

        t0 = time.perf_counter()
        target = context.require_target("the reference margin")
        margin = reference_margin(target, examples, sorted(context.layers))
        result["margin"] = {k: v for k, v in margin.items() if k != "pairs"}
        result["_margin_pairs"] = margin["pairs"]  # per-pair arrays, written to margins.jsonl, not the JSON
        result["_prompt_ids"] = [p.prompt_id for p in pairs]
        result["timings_s"]["margin"] = round(time.perf_counter() - t0, 2)
    result["verdict"], result["cue"], result["level"] = verdict(result)
    result["timings_s"]["total"] = round(time.perf_counter() - started, 2)
    return result


def build_context(config: AuditConfig) -> AuditContext:
    """The shared context: the target model (lazy) and the hidden layers every probe of the audit needs."""
    target = None
    if config.model is not None:
        target = TargetModel(config.model, device=config.device, dtype=config.dtype,
                             batch_size=config.batch_size, max_length=config.max_length,
                             max_prompt_length=config.max_length // 2, prompt_format=config.prompt_format)
    embed_device = "cpu"
    if config.device != "auto":
        embed_device = config.device
    else:
        try:
            import torch

            embed_device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            pass
    context = AuditContext(target=target, embed_device=embed_device)
    for representation in config.parsed():
        if isinstance(representation, HiddenStates):
            context.layers.update(representation.layers(context))
    return context


def run_audit(sets: list[tuple[str, str]], config: AuditConfig, out_dir: str | Path | None = None,
              command: str | None = None) -> dict[str, Any]:
    """Audit ``[(name, spec), ...]`` side by side; write the report to ``out_dir`` when given.

    All sets are loaded and checked before any model runs, so bad input fails in seconds.
    Raises DataError (bad or too few pairs), ConfigError (bad representation / layer), ModelError.
    """
    from safepref.audit import report as report_mod

    names = [name for name, _ in sets]
    if len(set(names)) != len(names):
        raise DataError(f"set names must be unique, got {names}")
    loaded = []
    for name, spec in sets:
        pairs, source = load_set(spec)
        if config.max_pairs is not None:
            pairs = pairs[: config.max_pairs]
        validate_pairs(pairs, name, config.folds)
        loaded.append((name, pairs, source))
    context = build_context(config)
    results = [audit_set(name, pairs, config, context, source) for name, pairs, source in loaded]
    report = {
        "audit_version": AUDIT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": provenance.command(command),
        "config": dataclasses.asdict(config),
        "versions": provenance.versions("scikit-learn", "torch", "transformers", "sentence-transformers"),
        "sets": results,
    }
    report["comparison"] = report_mod.comparison(results)
    if out_dir is not None:
        report_mod.write_report(report, out_dir)
    return report
