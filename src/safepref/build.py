"""Build a preference set for one of the study's conditions (or any recipe), with its datasheet: the library
function behind `safepref build` and the pipeline's build stages.

  from safepref.build import BuildConfig, build_set
  summary = build_set(BuildConfig("self-rm", out="out/sets/self-rm", target_samples="out/gen/sample",
                                  rm="offline:safety-minilm"))

``BuildConfig`` holds what the command's flags hold (same names); ``build_set`` checks the inputs, loads them,
selects the prompts, scores what the recipe compares, runs the recipe and writes, atomically, into ``out``:
pairs.jsonl, datasheet.json, datasheet.md and summary.json (written last). See `safepref build --help`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from safepref.config import field
from safepref.errors import ConfigError, DataError, did_you_mean

INPUT_FLAGS = {"human": "--human", "target_greedy": "--target-greedy", "target_samples": "--target-samples",
               "chosen": "--chosen", "pool": "--pool", "rm": "--rm"}


@dataclass
class BuildConfig:
    """One preference set: the recipe or condition, its inputs, limits and outputs (the command's flags)."""

    recipe: str = field(help="recipe or condition name (see above)")
    out: str = field(help="output folder")
    target_greedy: str | None = field(None, metavar="FILE", help="the target's greedy answers (safepref generate "
                                                                 "--preset paper-greedy)")
    target_samples: str | None = field(None, metavar="FILE", help="the target's sampled answers (safepref generate "
                                                                  "--preset paper-sample)")
    chosen: str | None = field(None, metavar="SOURCE", help="chosen-side answers for x-self / x-self-rm (gpt4o, "
                                                            "pku-safe-sft, a JSONL, ...)")
    human: str | None = field(None, metavar="PAIRS_SPEC", help="human-labelled pairs for original / hc-self "
                                                               "(pku-realign, pku-paper, a file)")
    pool: list[str] = field(default_factory=list, metavar="SOURCE",
                            help="a pool source for pool-rm (repeatable); label=SPEC names it")
    rm: str | None = field(None, metavar="SPEC", help="reward model: hf:<id>, offline:<name>, length")
    proxy: str | None = field(None, metavar="NOTE", help="this set only stands in for the condition (e.g. Peer+RM "
                                                         "without peers of the target's size): NOTE says why; the "
                                                         "datasheet and the report label it a proxy")
    rescore: bool = field(False, help="score every answer with --rm, even scored ones")
    device: str = field("auto", help="device for the reward model (auto, cpu, cuda)")
    prompts: str | None = field(None, metavar="SPEC", help="keep only the prompts of this source")
    limit_prompts: int | None = field(None, metavar="N", help="keep N common prompts (smallest prompt_id first)")
    max_per_prompt: int | None = field(None, metavar="K", help="at most K pairs a prompt (original, hc-self, "
                                                               "x-self, x-self-rm)")
    min_chars: int | None = field(None, help="self-rm / pool-rm: shortest valid answer in characters (default 5, "
                                             "the study's)")
    min_samples: int | None = field(None, help="self-rm / pool-rm: valid answers a prompt needs (default 2, the "
                                               "study's)")
    min_sources: int = field(2, help="pool-rm: sources a prompt needs (default 2)")
    tokenizer: str = field("auto", help="tokenizer for datasheet lengths: auto (the target model's), a model spec, "
                                        "or none (whitespace words)")
    refusal_phrases: str = field("gcg-v1", help="refusal phrase list (gcg-v1, more-is-less-v1)")


# ------------------------------------------------------------------------------------------ resolution


def resolve(name: str) -> tuple[str, str | None]:
    """``(recipe, condition)`` for a recipe or condition name; ConfigError for sft or unknown names."""
    from safepref.conditions import CONDITIONS
    from safepref.recipes import RECIPES

    if name == "sft":
        raise ConfigError("condition 'sft' is the starting model itself: there is no preference set to build")
    if name in CONDITIONS:
        return CONDITIONS[name].recipe, name  # type: ignore[return-value]
    if name in RECIPES:
        return name, None
    known = sorted(set(RECIPES) | set(CONDITIONS) - {"sft"})
    hint = did_you_mean(name, known)
    raise ConfigError(f"unknown recipe or condition '{name}'.{hint} Known: {', '.join(known)}")


def needed_inputs(recipe: str, condition: str | None) -> tuple[set[str], set[str]]:
    """``(required, allowed)`` input names for a recipe / condition (the condition table says both)."""
    from safepref.conditions import CONDITIONS
    from safepref.recipes import RECIPES

    required = set(RECIPES[recipe].needs)
    if condition is not None:
        required |= set(CONDITIONS[condition].needs)
    allowed = required | set(CONDITIONS[condition].optional if condition else ())
    if recipe == "pool-rm" and condition is None:
        allowed |= {"target_samples", "target_greedy"}  # the target's answers join the pool as "self"
    allowed.add("rm")  # unscored recipes: datasheet scores only
    # Answers may arrive scored (e.g. by `safepref rm score`): a missing score is caught when scoring.
    required.discard("rm")
    return required, allowed


def check_inputs(args: BuildConfig, recipe: str, condition: str | None) -> None:
    required, allowed = needed_inputs(recipe, condition)
    given = {name for name in INPUT_FLAGS if getattr(args, name)}
    what = f"condition {condition} (recipe {recipe})" if condition else f"recipe {recipe}"
    missing = sorted(required - given)
    if missing:
        flags = ", ".join(INPUT_FLAGS[m] for m in missing)
        raise ConfigError(f"{what} needs {flags}")
    unused = sorted(given - allowed)
    if unused:
        flags = ", ".join(INPUT_FLAGS[u] for u in unused)
        extra = " (peer-rm pools peers only; all-rm adds the target's answers)" if condition == "peer-rm" else ""
        raise ConfigError(f"{what} does not use {flags}{extra}")
    if args.limit_prompts is not None and args.limit_prompts < 1:
        raise ConfigError("--limit-prompts must be >= 1")
    if args.max_per_prompt is not None and args.max_per_prompt < 1:
        raise ConfigError("--max-per-prompt must be >= 1")


# ------------------------------------------------------------------------------------------ loading


def _label(spec: str) -> str:
    """A short name for a source spec: its registered name or file stem; ``label=spec`` names it."""
    from safepref.sources import parse_spec

    if "=" in spec and not Path(spec).exists():
        label, _ = spec.split("=", 1)
        from safepref.sources import SOURCES

        if label not in SOURCES:  # a user label, not a "name=path" source spec
            return label
    path = Path(spec)
    if path.is_dir() or path.name == "responses.jsonl":
        return path.parent.name if path.name == "responses.jsonl" else path.name
    return parse_spec(spec).label


def _strip_label(spec: str) -> str:
    from safepref.sources import SOURCES

    if "=" in spec and not Path(spec).exists():
        label, rest = spec.split("=", 1)
        if label not in SOURCES:
            return rest
    return spec


def load_answers(spec: str) -> tuple[list[Any], dict[str, Any]]:
    """Answers of a source spec. A `safepref generate` folder or a file of safepref Response records keeps
    provenance, sample indices and scores; anything else goes through ``safepref.sources``."""
    from safepref.records import iter_jsonl, read_records
    from safepref.sources import load_responses

    spec = _strip_label(spec)
    path = Path(spec)
    if path.is_dir():
        path = path / "responses.jsonl"
        if not path.exists():
            raise DataError(f"{spec} is a folder without responses.jsonl (is it a `safepref generate` output?)")
    if path.is_file() and path.name.endswith(".jsonl"):
        first = next(iter_jsonl(path), None)
        if first is not None and isinstance(first[1].get("source"), dict) and "response" in first[1]:
            records = read_records(path, "response")
            if not records:
                raise DataError(f"{path}: no answers in file")
            return records, {"source": str(path), "rows": len(records), "kept": len(records), "dropped": {}}
    records, report = load_responses(spec)
    return records, report.as_dict()


def _prompt_ids(records: list[Any]) -> set[str]:
    return {r.prompt_id for r in records}


# ------------------------------------------------------------------------------------------ scoring


def score_answers(rm: Any, responses: list[Any], chunk: int = 256) -> int:
    """Fill ``score`` (and ``meta['rm']``) of ``responses`` in place; returns how many were scored."""
    from tqdm.auto import tqdm

    from safepref.errors import SafeprefError

    for start in tqdm(range(0, len(responses), chunk), desc=f"scoring ({rm.name})", unit="chunk",
                      disable=len(responses) <= chunk):
        part = responses[start:start + chunk]
        scores = rm.score([r.prompt for r in part], [r.response for r in part])
        if len(scores) != len(part):
            raise SafeprefError(f"reward model {rm.name} returned {len(scores)} scores for {len(part)} answers")
        for response, score in zip(part, scores, strict=True):
            response.score = float(score)
            response.meta = {**(response.meta or {}), "rm": rm.name}
    return len(responses)


def make_length_counter(args: BuildConfig, target_records: list[Any]) -> tuple[Any, str, str | None]:
    """``(count, unit, note)`` for datasheet lengths (see --tokenizer)."""
    from safepref.datasheet import token_counter
    from safepref.models import load_tokenizer

    choice = args.tokenizer
    if choice in ("none", "whitespace"):
        count, unit = token_counter(None)
        return count, unit, None
    if choice != "auto":
        return (*token_counter(load_tokenizer(choice), name=choice), None)
    names = sorted({str(r.source.get("name")) for r in target_records
                    if isinstance(r.source, dict) and r.source.get("kind") == "model" and r.source.get("name")})
    if len(names) != 1:
        count, unit = token_counter(None)
        why = "no target model answers" if not names else f"several target models ({', '.join(names)})"
        return count, unit, f"{why}: lengths in whitespace words (pass --tokenizer to count tokens)"
    try:
        tokenizer = load_tokenizer(names[0])
    except Exception as exc:  # noqa: BLE001 - any tokenizer failure falls back, and says so
        count, unit = token_counter(None)
        return count, unit, f"tokenizer of {names[0]} not loadable ({type(exc).__name__}: {str(exc)[:120]}): " \
                            "lengths in whitespace words"
    return (*token_counter(tokenizer, name=names[0]), None)


# ------------------------------------------------------------------------------------------ prompts, recipe


def common_prompts(recipe: str, min_sources: int, human: list[Any] | None, answers: dict[str, list[Any]],
                   pool: dict[str, list[Any]], inputs: dict[str, dict[str, Any]]) -> set[str]:
    """The prompts the recipe can pair; DataError naming each input and its size when there are none."""
    from safepref.recipes import require_overlap

    def sets_of(names: list[str]) -> dict[str, set[str]]:
        return {f"{inputs[n]['label']} ({INPUT_FLAGS[n]})": _prompt_ids(human if n == "human" else answers[n])
                for n in names}

    if recipe == "original":
        return _prompt_ids(human or [])
    if recipe == "hc-self":
        return require_overlap(sets_of(["human", "target_greedy"]))
    if recipe in ("x-self", "x-self-rm"):
        return require_overlap(sets_of(["chosen", "target_greedy"]))
    if recipe == "self-rm":
        return _prompt_ids(answers["target_samples"])
    sources_of: Counter = Counter()
    for records in pool.values():
        sources_of.update(_prompt_ids(records))
    common = {pid for pid, n in sources_of.items() if n >= min_sources}
    if not common:
        sizes = ", ".join(f"{label} ({len(_prompt_ids(rs))} prompts)" for label, rs in pool.items())
        raise DataError(f"no prompt is answered by {min_sources} or more pool sources: {sizes}")
    return common


def call_recipe(recipe: str, condition: str | None, args: BuildConfig, human: list[Any] | None,
                answers: dict[str, list[Any]], pool: dict[str, list[Any]]) -> tuple[list[Any], Counter]:
    """Run the recipe function on the loaded inputs with the command-line limits."""
    from safepref.recipes import RECIPES

    function = RECIPES[recipe].function
    if recipe == "original":
        return function(human, max_per_prompt=args.max_per_prompt)
    if recipe == "hc-self":
        return function(human, answers["target_greedy"], max_per_prompt=args.max_per_prompt)
    if recipe == "x-self":  # pairs carry the condition's name (gpt4o-self / stronger-self) as their recipe
        return function(answers["chosen"], answers["target_greedy"], max_per_prompt=args.max_per_prompt,
                        recipe=condition or "x-self")
    if recipe == "x-self-rm":
        return function(answers["chosen"], answers["target_greedy"], max_per_prompt=args.max_per_prompt)
    limits = {k: v for k, v in (("min_chars", args.min_chars), ("min_samples", args.min_samples)) if v is not None}
    if recipe == "self-rm":
        return function(answers["target_samples"], **limits)
    return function(pool, min_sources=args.min_sources, **limits)


# ------------------------------------------------------------------------------------------ build_set


def command_for(config: BuildConfig) -> list[str]:
    """The `safepref build` arguments a user would type for ``config`` (settings left at default omitted)."""
    argv = ["build", config.recipe]
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "recipe" or value == (f.default_factory() if callable(f.default_factory) else f.default):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag)
        else:
            argv += [x for v in (value if isinstance(value, list) else [value]) for x in (flag, str(v))]
    return argv


OWN_FILES = ("pairs.jsonl", "summary.json", "datasheet.json", "datasheet.md")


def _check_own_files(out: Path) -> None:
    """Refuse to write over files a build did not write: a pairs.jsonl, summary.json or datasheet in ``out`` is
    replaced only when summary.json is a build's own (it names a recipe)."""
    from safepref.errors import SafeprefError

    present = [name for name in OWN_FILES if (out / name).exists()]
    if not present:
        return
    try:
        own = "recipe" in json.loads((out / "summary.json").read_text())
    except (OSError, ValueError, TypeError):
        own = False
    if not own:
        raise SafeprefError(f"{out} holds {', '.join(present)} that no safepref build wrote (no build summary.json);"
                            " they are never replaced: choose another --out")


def build_set(config: BuildConfig, command: str | None = None) -> dict[str, Any]:
    """Build the preference set ``config`` describes into ``config.out``; returns its summary (summary.json).
    ``command`` is recorded as the command that ran (default: ``provenance.command``: the `safepref build`
    command line being run, else the equivalent one)."""
    import sys

    from safepref import provenance
    from safepref.paths import check_output_dir
    from safepref.refusal import phrase_set

    started = time.time()
    recipe, condition = resolve(config.recipe)
    if condition == "gpt4o-self" and not config.chosen:
        config = replace(config, chosen="gpt4o")  # the condition names its source
    check_inputs(config, recipe, condition)
    phrases = phrase_set(config.refusal_phrases)
    if condition == "gpt4o-self" and config.chosen and _label(config.chosen) != "gpt4o":
        print(f"note: condition gpt4o-self with --chosen {config.chosen} (not the gpt4o source)", file=sys.stderr)
    rm = None
    check_output_dir(config.out)  # before the reward model loads: a bad --out must not cost its loading time
    _check_own_files(Path(config.out))
    if config.rm:  # load first: a bad reward model name fails before any data is read
        from safepref.reward import load_reward_model

        rm = load_reward_model(config.rm, device=config.device)
    human, answers, pool, inputs = _load_inputs(config, recipe, condition)
    common, selection = _select(config, recipe, human, answers, pool, inputs)
    scoring = _score(config, recipe, rm, answers, pool, common)
    pairs, drops = call_recipe(recipe, condition, config, human, answers, pool)
    if rm is not None and not _recipe(recipe).scored and pairs:
        from safepref.reward import score_pairs

        chosen_scores, rejected_scores = score_pairs(rm, pairs)
        for pair, c, r in zip(pairs, chosen_scores, rejected_scores, strict=True):
            pair.chosen_meta.update(score=float(c), rm=rm.name)
            pair.rejected_meta.update(score=float(r), rm=rm.name)
        scoring["scored_pairs_for_datasheet"] = len(pairs)
    if not pairs:
        raise DataError(f"recipe {recipe} made no pair (dropped: {dict(drops) or 'nothing'}); nothing written")
    return _write(config, recipe, condition, pairs, drops, rm, phrases, answers,
                  {"command": provenance.command(command, command_for(config)), "inputs": inputs,
                   "prompt_selection": selection, "scoring": scoring, "started": started})


def _recipe(name: str) -> Any:
    from safepref.recipes import RECIPES

    return RECIPES[name]


def _load_inputs(config: BuildConfig, recipe: str, condition: str | None) -> tuple[Any, dict, dict, dict]:
    """``(human pairs, answers by role, pool by label, inputs record)``: every input loaded."""
    from safepref.sources import load_pairs

    inputs: dict[str, dict[str, Any]] = {}
    human = None
    if config.human:
        human, report = load_pairs(config.human)
        inputs["human"] = {"spec": config.human, "label": _label(config.human), "report": report.as_dict()}
    answers: dict[str, list[Any]] = {}  # role or pool label -> answers
    for role in ("target_greedy", "target_samples", "chosen"):
        spec = getattr(config, role)
        if spec:
            answers[role], report = load_answers(spec)
            inputs[role] = {"spec": spec, "label": _label(spec), "report": report}
    pool: dict[str, list[Any]] = {}
    for spec in config.pool:
        label = _label(spec)
        if label in pool or label == "self":
            raise ConfigError(f"two --pool sources are both named '{label}': name them with label=SPEC")
        pool[label], report = load_answers(spec)
        inputs[f"pool:{label}"] = {"spec": spec, "label": label, "report": report}
    if recipe == "pool-rm":
        own = answers.get("target_samples", []) + answers.get("target_greedy", [])
        if own:
            pool["self"] = own
        if len(pool) < 2:
            raise DataError(f"a pool needs at least 2 sources, got {len(pool)} ({', '.join(pool) or 'none'}): "
                            "add --pool sources" + ("" if condition == "peer-rm" else " or --target-samples"))
    return human, answers, pool, inputs


def _select(config: BuildConfig, recipe: str, human: Any, answers: dict, pool: dict,
            inputs: dict) -> tuple[set[str], dict[str, Any]]:
    """The prompts the recipe can pair, narrowed by --prompts / --limit-prompts; every input filtered to them
    in place (what is left out counted per input)."""
    from safepref.sources import load_prompts

    common = common_prompts(recipe, config.min_sources, human, answers, pool, inputs)
    selection: dict[str, Any] = {"common_prompts": len(common)}
    keep: set[str] | None = None
    if config.prompts:
        wanted, _ = load_prompts(config.prompts)
        keep = {p.prompt_id for p in wanted}
        if not common & keep:
            raise DataError(f"none of the {len(keep)} prompts of --prompts {config.prompts} is among the "
                            f"{len(common)} prompts common to the inputs")
        selection["prompts"] = {"spec": config.prompts, "prompts": len(keep)}
        common &= keep
    if config.limit_prompts is not None:
        keep = set(sorted(common)[: config.limit_prompts])
        common &= keep
        selection["limit_prompts"] = config.limit_prompts
    selection["selected_prompts"] = len(common) if keep is not None else None
    if keep is not None:  # filter every input to the kept prompts, counting what is left out
        if human is not None:
            inputs["human"]["not_selected"] = sum(p.prompt_id not in keep for p in human)
            human[:] = [p for p in human if p.prompt_id in keep]
        for name in list(answers):
            inputs[name]["not_selected"] = sum(r.prompt_id not in keep for r in answers[name])
            answers[name] = [r for r in answers[name] if r.prompt_id in keep]
        for label in list(pool):
            if label != "self":
                inputs[f"pool:{label}"]["not_selected"] = sum(r.prompt_id not in keep for r in pool[label])
            pool[label] = [r for r in pool[label] if r.prompt_id in keep]
    return common, selection


def _score(config: BuildConfig, recipe: str, rm: Any, answers: dict, pool: dict, common: set[str]) -> dict:
    """Score the answers a scored recipe compares (those without a score, or all with rescore)."""
    scoring: dict[str, Any] = {"rm": rm.name if rm else None}
    if _recipe(recipe).scored:
        compared = [r for records in (pool.values() if recipe == "pool-rm" else
                                      [answers.get(k, []) for k in ("chosen", "target_greedy", "target_samples")])
                    for r in records if r.prompt_id in common]
        todo = [r for r in compared if r.score is None or config.rescore]
        if todo and rm is None:
            raise ConfigError(f"recipe {recipe} compares reward scores and {len(todo)} answers have none: "
                              "pass --rm SPEC (hf:<id or folder>, offline:safety-minilm, length)")
        scoring["scored_now"] = score_answers(rm, todo) if todo else 0
        scoring["kept_existing_scores"] = len(compared) - len(todo)
    return scoring


def _write(config: BuildConfig, recipe: str, condition: str | None, pairs: list[Any], drops: Counter, rm: Any,
           phrases: Any, answers: dict, record: dict[str, Any]) -> dict[str, Any]:
    """pairs.jsonl, the datasheet, then summary.json (last: its presence marks a finished build)."""
    from safepref import provenance
    from safepref.conditions import CONDITIONS
    from safepref.config import config_hash
    from safepref.datasheet import build_datasheet, write_datasheet
    from safepref.records import write_json, write_jsonl

    inputs, scoring = record["inputs"], record["scoring"]
    target_records = answers.get("target_greedy", []) + answers.get("target_samples", [])
    count, unit, length_note = make_length_counter(config, target_records)
    settings = asdict(config)
    info = CONDITIONS.get(condition) if condition else None
    sheet = build_datasheet(pairs, drops, recipe=recipe, condition=condition, count_tokens=count, length_unit=unit,
                            refusal_phrases=phrases,
                            extra={"inputs": {k: {kk: vv for kk, vv in v.items() if kk != "report"}
                                              for k, v in inputs.items()},
                                   "paper": None if info is None else {"label": info.label, "chosen": info.chosen,
                                                                       "rejected": info.rejected},
                                   **({"proxy": config.proxy} if config.proxy else {})})
    if length_note:
        sheet["length"]["note"] = length_note
    seen = getattr(rm, "seen_prompt_ids", None) if rm is not None else None
    if seen and sheet.get("reward"):
        # Scores on prompts the reward model was trained on are in-sample: say how many there are.
        scoring["prompts_seen_in_rm_training"] = len({p.prompt_id for p in pairs} & set(seen))
        sheet["reward"]["prompts_seen_in_rm_training"] = scoring["prompts_seen_in_rm_training"]
    out = Path(config.out)
    write_jsonl(out / "pairs.jsonl", pairs)
    write_datasheet(out, sheet)
    summary = {"command": record["command"], "recipe": recipe, "condition": condition, "config": settings,
               "hash": config_hash(settings), "inputs": inputs, "prompt_selection": record["prompt_selection"],
               "scoring": scoring, "pairs": len(pairs), "prompts": sheet["prompts"],
               "drops": dict(sorted(drops.items())), "seconds": round(time.time() - record["started"], 2),
               "versions": provenance.versions()}
    write_json(out / "summary.json", summary)
    return summary
