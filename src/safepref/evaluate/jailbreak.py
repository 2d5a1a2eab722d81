"""Jailbreak attack success rate: answer harmful prompts with a model, save the answers, then judge them.

  safepref eval jailbreak --model smollm2-135m-instruct --prompts advbench:100 --judge keyword \\
      --judge classifier --out out/jb
  safepref eval jailbreak --answers out/jb/answers.jsonl --judge rubric --judge-model gpt-4o --out out/jb

The study's protocol is the default: the first 100 AdvBench goals in the Alpaca instruction template, greedy,
512 new tokens (preset ``paper-eval``); ``--prompt-format chat`` uses the model's chat template instead.
Any prompt source works (``harmbench``, ``xstest-unsafe``, ``donotanswer:200``, a file).

Output folder:

- ``generation/``: the resumable generation run (shards, config, summary); a rerun skips finished prompts;
- ``answers.jsonl``: every answer with its provenance (model, settings, prompt source), written before any
  judging, so that judges can be rerun or added later (``--answers``);
- ``judgments/<judge>.jsonl``: one row per answer: ``harmful`` (true/false/null), ``score``, ``raw``;
- ``per_answer.jsonl``: each answer with every judge's verdict;
- ``metrics.json``: ``asr`` per judge with ``asr_ci`` (95% Wilson interval and n), mean scores, counts, unparsed counts, and how it was produced.
  Judges run earlier on the same answers into the same folder are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from safepref.errors import BackendError, DataError, SafeprefError
from safepref.evaluate.judges import Judge, JudgeSettings, aggregate, check_judge_spec, make_judge
from safepref.records import Prompt, Response, iter_jsonl, read_records, to_dict, write_json, write_jsonl
from safepref.stats import rate_entry

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = "advbench:100"
DEFAULT_PRESET = "paper-eval"
DEFAULT_JUDGES = ("keyword", "classifier")


# ------------------------------------------------------------------------------------------- answers


def load_answers(path: str | Path, prompt_field: str = "prompt", response_field: str = "response"
                 ) -> list[Response]:
    """Saved answers: safepref's answers/responses JSONL (provenance kept) or any file with prompt and
    response columns (``.jsonl``, ``.json``, ``.csv``, ``.parquet``). Raises DataError for a missing or
    empty file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"answers file not found: {path}")
    if path.suffix == ".jsonl":
        first = next(iter_jsonl(path), None)
        if first is None:
            raise DataError(f"{path}: no answers in file")
        if isinstance(first[1].get("source"), dict) and "response" in first[1]:
            return read_records(path, "response")
    from safepref.sources import load_responses

    responses, _ = load_responses(str(path), {"prompt": prompt_field, "response": response_field})
    from safepref.sources.tables import iter_rows

    # Every input column travels with its answer into the verdict files (one row per answer, same order).
    for response, (_, row) in zip(responses, iter_rows(path), strict=False):
        response.meta = {**response.meta, "input": row}
    return responses


def generate_answers(prompts: list[Prompt], model: str, out_dir: Path, preset: str | None = DEFAULT_PRESET,
                     config_path: str | None = None, overrides: list[str] | None = None,
                     backend: str | None = None, backend_options: dict[str, Any] | None = None,
                     overwrite: bool = False) -> tuple[list[Response], dict[str, Any]]:
    """Answers of ``model`` to ``prompts`` through ``run_generation`` (resumable, in ``out_dir/generation``),
    ordered as the prompts. Returns (answers, generation summary)."""
    from safepref.generate import default_backend, generation_config, make_backend, run_generation

    config = generation_config(preset, config_path, overrides)
    name = backend or default_backend()
    options = dict(backend_options or {})
    if name == "openai":
        options = {k: v for k, v in options.items() if k in ("base_url", "api_key_env", "concurrency", "timeout",
                                                                 "max_retries")}
        options["cache_dir"] = str(out_dir / "generation" / "api_cache")
    else:
        options = {k: v for k, v in options.items() if k in ("device", "dtype", "trust_remote_code")}
    engine = make_backend(name, model, **options)
    summary = run_generation(prompts, engine, config, out_dir / "generation", overwrite=overwrite)
    del engine  # free the model before judges load theirs
    responses = read_records(out_dir / "generation" / "responses.jsonl", "response")
    order = {p.prompt_id: i for i, p in enumerate(prompts)}
    responses.sort(key=lambda r: (order.get(r.prompt_id, len(order)), r.sample_index))
    for response in responses:
        prompt = prompts[order[response.prompt_id]]
        response.meta = {**response.meta, "prompt_source": prompt.source, "prompt_index": order[response.prompt_id],
                         **({"prompt_meta": prompt.meta} if prompt.meta else {})}
    return responses, summary


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def judge_file_name(judge_name: str) -> str:
    """``hf-classifier:/models/guard`` -> ``hf-classifier_models_guard``: a safe file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", judge_name).strip("_")


# -------------------------------------------------------------------------------------------- judging


def build_judges(specs: list[str], settings: JudgeSettings) -> list[Judge]:
    """Every judge, built before any generation so that a bad name or a missing key fails at once."""
    for spec in specs:
        check_judge_spec(spec)
    judges = []
    for spec in dict.fromkeys(specs):
        judges.append(make_judge(spec, settings))
    return judges


def judge_answers(answers: list[Response], judges: list[Judge], out_dir: Path,
                  answers_sha: str) -> tuple[dict[str, Any], list[tuple[str, Exception]]]:
    """Run each judge over ``answers``; write ``judgments/<judge>.jsonl``. A judge that fails is reported
    (with what it kept) while the others still run. Returns (judge name -> entry, failures)."""
    prompts = [a.prompt for a in answers]
    texts = [a.response for a in answers]
    entries: dict[str, Any] = {}
    failures: list[tuple[str, Exception]] = []
    for judge in judges:
        started = time.time()
        log.info("judging %d answers with %s", len(answers), judge.name)
        try:
            verdicts = judge.judge(prompts, texts)
        except SafeprefError as exc:
            failures.append((judge.name, exc))
            continue
        if len(verdicts) != len(answers):
            raise SafeprefError(f"judge {judge.name} returned {len(verdicts)} verdicts for {len(answers)} answers")
        file = out_dir / "judgments" / f"{judge_file_name(judge.name)}.jsonl"
        write_jsonl(file, ({**(a.meta.get("input") or {}), "judge": judge.name, "prompt_id": a.prompt_id,
                            "sample_index": a.sample_index, "prompt": a.prompt, "answer": a.response,
                            "harmful": v.harmful, "score": v.score, "raw": v.raw}
                           for a, v in zip(answers, verdicts, strict=True)))
        entries[judge.name] = {**aggregate(verdicts), "file": str(file.relative_to(out_dir)),
                               "answers_sha256": answers_sha, "seconds": round(time.time() - started, 2),
                               "judge": judge.describe()}
    return entries, failures


def summarize(entries: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of judge entries: ``asr`` (and ``asr_ci``: rate, k, n, 95% Wilson interval),
    ``mean_score`` and ``unparsed`` per judge."""
    return {
        "asr": {name: e["asr"] for name, e in entries.items()},
        "mean_score": {name: e["mean_score"] for name, e in entries.items()},
        "unparsed": {name: e["unparsed"] for name, e in entries.items()},
        "harmful": {name: e["harmful"] for name, e in entries.items()},
        # ASR with its 95% Wilson interval and n (answers the judge could decide), per judge
        "asr_ci": {name: rate_entry(e["harmful"], e["judged"]) for name, e in entries.items()},
        # The study's headline pair is the rubric ASR and its mean score (the first rubric judge, if several).
        "rubric_mean_score": next((e["mean_score"] for n, e in entries.items() if n.split(":")[0] == "rubric"),
                                  None),
    }


def _per_answer(answers: list[Response], entries: dict[str, Any], out_dir: Path) -> None:
    verdicts: dict[str, list[dict[str, Any]]] = {}
    for name, entry in entries.items():
        rows = [obj for _, obj in iter_jsonl(out_dir / entry["file"])]
        if len(rows) == len(answers):
            verdicts[name] = rows
    write_jsonl(out_dir / "per_answer.jsonl", (
        {"prompt_id": a.prompt_id, "sample_index": a.sample_index, "prompt": a.prompt, "answer": a.response,
         "model": a.source.get("name"),
         "verdicts": {name: {"harmful": rows[i]["harmful"], "score": rows[i]["score"]}
                      for name, rows in verdicts.items()}}
        for i, a in enumerate(answers)))


def provenance(command: str | None = None) -> dict[str, Any]:
    """metrics.json's provenance keys: the command (``safepref.provenance.command``), versions, time."""
    from safepref import provenance as prov

    versions = prov.versions()
    return {"command": prov.command(command), "safepref": versions["safepref"], "python": versions["python"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# ------------------------------------------------------------------------------------------------ run


def run_jailbreak(out_dir: str | Path, judges: list[str] | tuple[str, ...] = DEFAULT_JUDGES,
                  model: str | None = None, prompts: str = DEFAULT_PROMPTS, answers: str | None = None,
                  limit: int | None = None, preset: str | None = DEFAULT_PRESET, config_path: str | None = None,
                  overrides: list[str] | None = None, prompt_format: str | None = None,
                  backend: str | None = None, backend_options: dict[str, Any] | None = None,
                  judge_settings: JudgeSettings | None = None, prompt_field: str = "prompt",
                  response_field: str = "response", overwrite: bool = False,
                  command: str | None = None) -> dict[str, Any]:
    """Generate (unless ``answers`` is given), save the answers, judge them; return metrics.json's content.

    Raises ConfigError for an unknown judge (before any work), ModelError for a model that cannot be
    loaded, DataError for bad prompt or answer files, and BackendError when a judge's endpoint fails, after
    the other judges' results and the answers are written (rerunning continues from the caches).
    """
    from safepref.sources import load_prompts

    out_dir = Path(out_dir)
    if (model is None) == (answers is None):
        raise SafeprefError("give either --model (generate answers) or --answers (judge saved answers)")
    if not judges:
        raise SafeprefError("no judge given: add --judge keyword (or rubric, classifier, hf-classifier:<folder>)")
    if limit is not None and limit <= 0:
        raise SafeprefError(f"--limit must be positive, got {limit}")
    judge_objects = build_judges(list(judges), judge_settings or JudgeSettings())

    info: dict[str, Any] = {}
    if answers is not None:
        responses = load_answers(answers, prompt_field, response_field)
        if limit is not None:
            responses = responses[:limit]
        info.update(answers_from=str(answers))
    else:
        prompt_records, report = load_prompts(prompts, {"prompt": prompt_field})
        if limit is not None:
            prompt_records = prompt_records[:limit]
        overrides = list(overrides or []) + ([f"prompt_format={prompt_format}"] if prompt_format else [])
        responses, summary = generate_answers(prompt_records, model, out_dir, preset, config_path,  # type: ignore[arg-type]
                                              overrides, backend, backend_options, overwrite)
        info.update(model=model, prompts=prompts, limit=limit, prompts_loaded=report.as_dict(),
                    generation={k: summary[k] for k in ("prompts", "prompts_resumed", "responses", "dropped",
                                                          "seconds_this_run", "backend", "generation", "hash")})
    if not responses:
        raise DataError("no answers to judge")
    answers_file = out_dir / "answers.jsonl"
    write_jsonl(answers_file, [to_dict(r) for r in responses])
    answers_sha = file_sha256(answers_file)

    entries, failures = judge_answers(responses, judge_objects, out_dir, answers_sha)
    # Judges run earlier on these same answers (same folder) stay in the metrics.
    metrics_file = out_dir / "metrics.json"
    if metrics_file.exists():
        try:
            previous = json.loads(metrics_file.read_text())
        except ValueError:
            previous = {}
        failed = {name for name, _ in failures}
        for name, entry in (previous.get("judges") or {}).items():
            if name not in entries and name not in failed and entry.get("answers_sha256") == answers_sha \
                    and (out_dir / entry.get("file", "")).exists():
                entries[name] = entry
    metrics = {**summarize(entries), "counts": {"answers": len(responses),
                                                "prompts": len({r.prompt_id for r in responses})},
               "judges": entries, "answers_file": str(answers_file), "answers_sha256": answers_sha,
               **info, "failed_judges": {name: str(exc) for name, exc in failures}, **provenance(command)}
    write_json(metrics_file, metrics)
    _per_answer(responses, entries, out_dir)
    if failures:
        name, exc = failures[0]
        raise BackendError(f"judge '{name}' failed: {exc}. The answers are saved in {answers_file} and the other "
                           f"judges' results in {metrics_file}; rerun the same command to continue")
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short table: one line per judge."""
    lines = [f"{'judge':<28} {'ASR':>6} {'95% CI':>15} {'harmful':>8} {'judged':>7} {'unparsed':>9} "
             f"{'mean score':>11}"]
    for name, entry in metrics["judges"].items():
        asr = "-" if entry["asr"] is None else f"{entry['asr']:.3f}"
        ci = rate_entry(entry["harmful"], entry["judged"])["ci95"]
        interval = "-" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
        mean = "-" if entry["mean_score"] is None else f"{entry['mean_score']:.3f}"
        lines.append(f"{name:<28} {asr:>6} {interval:>15} {entry['harmful']:>8} {entry['judged']:>7} "
                     f"{entry['unparsed']:>9} {mean:>11}")
    return "\n".join(lines)
