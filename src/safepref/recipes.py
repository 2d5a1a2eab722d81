"""The study's preference-set recipes: small pure functions over records (no I/O, no models).

  from safepref.recipes import original, hc_self, x_self, x_self_rm, self_rm, pool_rm, CONDITIONS
  pairs, drops = x_self(gpt4o_answers, self_greedy)                 # GPT4o+Self, Stronger+Self
  pairs, drops = self_rm(self_samples_scored)                       # Self+RM
  pairs, drops = pool_rm({"gpt4o": g, "alpaca": a, "self": s})      # Peer+RM / All+RM

Every recipe returns ``(pairs, drops)``: a list of ``PreferencePair`` (TRL conversational format, each side
carrying its provenance, score and ``role``) and a ``Counter`` of everything not turned into a pair, by reason.

Rules shared by all recipes
---------------------------
- Matching: answers are grouped and matched by ``prompt_id`` (a hash of the normalised prompt: case, Unicode
  form and whitespace do not matter), never by raw string equality and never by position or a running
  counter. A dropped sample therefore never shifts another prompt's group (a defect of the study's script).
- Output order: pairs sorted by ``prompt_id``; several pairs of one prompt keep the input order of their
  chosen side. The order does not depend on file order, sharding or resumption. No recipe draws random
  numbers, so no seed is needed: every tie has a fixed rule below.
- A pair's prompt text is the one of the answer put on the chosen side.
- Answers that are empty after stripping whitespace are never paired.
- Recipes that compare scores need each compared answer's ``score`` (higher = better); an answer that must
  be compared but has no finite score raises ``DataError``. Answers that are never compared (their prompt was
  dropped first) may be unscored.

Drop reasons (``drops`` keys) and what one count is:

==========================  ========  ==========================================================================
reason                      unit      meaning
==========================  ========  ==========================================================================
``no_self_answer``          prompt    the other side has the prompt, the target's answers do not
``no_human_pair``           prompt    hc-self: the target answered a prompt without a human pair
``no_chosen_answer``        prompt    x-self: the target answered a prompt the chosen source did not
``no_stronger_answer``      prompt    x-self-rm: likewise for the stronger source
``empty_<role>_answer``     answer    whitespace-only answer (role: self, chosen, stronger, human)
``sample_too_short``        answer    self-rm / pool-rm: answer shorter than ``min_chars`` (study: 5)
``too_few_samples``         prompt    self-rm / pool-rm: fewer than ``min_samples`` valid answers (study: 2)
``too_few_sources``         prompt    pool-rm: valid answers from fewer than ``min_sources`` sources
``all_tied``                prompt    self-rm / pool-rm: best score == worst score, nothing to prefer
``identical_sides``         pair      chosen and rejected texts are equal (after stripping)
``duplicate_pair``          pair      the same (prompt, chosen, rejected) texts were already paired
``over_per_prompt_cap``     pair      more pairs on the prompt than ``max_per_prompt``
==========================  ========  ==========================================================================

Ties: self-rm and pool-rm pick, among answers with the best (worst) score, the first in a fixed order
(pool: the pool's source order, then input order; self: ``sample_index``, then input order); when best and
worst scores are equal the prompt is dropped as ``all_tied``. x-self-rm keeps the stronger answer as chosen
on a tie (it swaps only when the self answer scores strictly higher), as the study's ``combine_data.py`` does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

# The conditions table lives in safepref.conditions (read by build, the pipeline and the report); kept
# importable from here.
from safepref.conditions import CONDITIONS, Condition  # noqa: F401
from safepref.errors import DataError
from safepref.records import PreferencePair, Response

Drops = Counter

MIN_CHARS = 5  # the study's sampling pass drops answers shorter than 5 characters
MIN_SAMPLES = 2  # ... and needs 2 valid samples a prompt


# ---------------------------------------------------------------------------------------------- helpers


def _group(responses: Iterable[Response]) -> dict[str, list[Response]]:
    """Answers by ``prompt_id``, input order kept inside each group."""
    groups: dict[str, list[Response]] = {}
    for response in responses:
        groups.setdefault(response.prompt_id, []).append(response)
    return groups


def _non_empty(responses: Iterable[Response], role: str, drops: Counter) -> list[Response]:
    kept = []
    for response in responses:
        if response.response.strip():
            kept.append(response)
        else:
            drops[f"empty_{role}_answer"] += 1
    return kept


def _single_answers(responses: Sequence[Response], role: str, drops: Counter) -> dict[str, Response]:
    """One answer a prompt (the target's greedy pass); a second answer to a prompt is a DataError."""
    single: dict[str, Response] = {}
    for response in _non_empty(responses, role, drops):
        if response.prompt_id in single:
            raise DataError(
                f"the {role} answers hold more than one answer for prompt {response.prompt_id} "
                f"({response.prompt[:60]!r}): give the greedy pass (one answer a prompt), not a sampling pass")
        single[response.prompt_id] = response
    return single


def _score(response: Response, role: str) -> float:
    score = response.score
    if score is None or not isinstance(score, int | float) or not math.isfinite(score):
        raise DataError(
            f"{role} answer to prompt {response.prompt_id} ({response.prompt[:60]!r}) has no finite reward "
            f"score (got {score!r}); score the answers first (safepref build ... --rm SPEC)")
    return float(score)


def require_overlap(prompt_sets: Mapping[str, set[str]]) -> set[str]:
    """The prompts common to all named sets; DataError naming each set and its size when there are none."""
    sets = list(prompt_sets.values())
    common = set.intersection(*sets) if sets else set()
    if not common:
        sizes = ", ".join(f"{name} ({len(ids)} prompts)" for name, ids in prompt_sets.items())
        raise DataError(f"no prompt in common between {sizes}: they answer different prompts "
                        "(prompts are matched by prompt_id, the hash of the normalised prompt text)")
    return common


def _pair(chosen: Response, rejected: Response, recipe: str, chosen_role: str,
          rejected_role: str) -> PreferencePair:
    pair = PreferencePair.from_responses(chosen, rejected, recipe)
    pair.chosen_meta["role"] = chosen_role
    pair.rejected_meta["role"] = rejected_role
    for meta, response in ((pair.chosen_meta, chosen), (pair.rejected_meta, rejected)):
        if response.meta.get("rm"):  # which reward model produced the score
            meta["rm"] = response.meta["rm"]
    return pair


class _Collector:
    """Applies the per-pair rules (identical sides, duplicates, per-prompt cap) and the output order."""

    def __init__(self, drops: Counter, max_per_prompt: int | None = None):
        if max_per_prompt is not None and max_per_prompt < 1:
            raise ValueError(f"max_per_prompt must be >= 1 or None, got {max_per_prompt}")
        self.drops = drops
        self.max_per_prompt = max_per_prompt
        self.pairs: list[PreferencePair] = []
        self.seen: set[tuple[str, str, str]] = set()
        self.per_prompt: Counter = Counter()

    def add(self, pair: PreferencePair) -> None:
        chosen, rejected = pair.chosen_text.strip(), pair.rejected_text.strip()
        if chosen == rejected:
            self.drops["identical_sides"] += 1
            return
        key = (pair.prompt_id, chosen, rejected)
        if key in self.seen:
            self.drops["duplicate_pair"] += 1
            return
        if self.max_per_prompt is not None and self.per_prompt[pair.prompt_id] >= self.max_per_prompt:
            self.drops["over_per_prompt_cap"] += 1
            return
        self.seen.add(key)
        self.per_prompt[pair.prompt_id] += 1
        self.pairs.append(pair)

    def result(self) -> tuple[list[PreferencePair], Counter]:
        # Stable sort: pairs of one prompt keep the order they were added in.
        return sorted(self.pairs, key=lambda p: p.prompt_id), Counter({k: n for k, n in self.drops.items() if n})


def _pair_side(pair: PreferencePair, side: str) -> Response:
    """One side of a human pair as a Response (provenance kept) so that it can be re-paired."""
    meta = pair.chosen_meta if side == "chosen" else pair.rejected_meta
    text = pair.chosen_text if side == "chosen" else pair.rejected_text
    return Response(prompt=pair.prompt_text, response=text, source=dict(meta.get("source") or {}),
                    prompt_id=pair.prompt_id, sample_index=int(meta.get("sample_index") or 0),
                    score=meta.get("score"))


# ---------------------------------------------------------------------------------------------- recipes


def original(pairs: Sequence[PreferencePair], *, max_per_prompt: int | None = None
             ) -> tuple[list[PreferencePair], Counter]:
    """Original Dataset ("DPO"): the human-labelled pairs as they are (safer = chosen).

    Every row of the source is a pair, as in the study (a prompt can hold several rows); drops are
    ``identical_sides``, ``duplicate_pair`` and, with ``max_per_prompt``, ``over_per_prompt_cap`` (the first
    rows of each prompt in input order are kept).
    """
    drops: Counter = Counter()
    out = _Collector(drops, max_per_prompt)
    for pair in pairs:
        if not pair.chosen_text.strip() or not pair.rejected_text.strip():
            drops["empty_human_answer"] += 1
            continue
        copy = PreferencePair(prompt=list(pair.prompt), chosen=list(pair.chosen), rejected=list(pair.rejected),
                              chosen_meta={**pair.chosen_meta, "role": "human"},
                              rejected_meta={**pair.rejected_meta, "role": "human"},
                              prompt_id=pair.prompt_id, recipe="original")
        out.add(copy)
    return out.result()


def hc_self(human_pairs: Sequence[PreferencePair], self_greedy: Sequence[Response], *,
            max_per_prompt: int | None = None) -> tuple[list[PreferencePair], Counter]:
    """HC+Self: the human-chosen (safer) answer as chosen, the target's greedy answer as rejected.

    One pair per human pair whose prompt the target answered (a prompt with several human pairs gives
    several pairs, each with the same greedy answer, as the study's row-by-row script did; duplicates of the
    same chosen text are dropped as ``duplicate_pair``). Unmatched prompts: ``no_self_answer`` (human pair
    without greedy answer), ``no_human_pair`` (greedy answer without human pair). Raises DataError when the
    two share no prompt or when ``self_greedy`` holds several answers for one prompt.
    """
    drops: Counter = Counter()
    greedy = _single_answers(self_greedy, "self", drops)
    human = []
    for pair in human_pairs:
        if pair.chosen_text.strip():
            human.append(pair)
        else:
            drops["empty_human_answer"] += 1
    human_ids = {p.prompt_id for p in human}
    require_overlap({"human pairs": human_ids, "self answers": set(greedy)})
    drops["no_self_answer"] += len(human_ids - set(greedy))
    drops["no_human_pair"] += len(set(greedy) - human_ids)
    out = _Collector(drops, max_per_prompt)
    for pair in human:
        if pair.prompt_id in greedy:
            out.add(_pair(_pair_side(pair, "chosen"), greedy[pair.prompt_id], "hc-self", "human", "self"))
    return out.result()


def x_self(chosen_responses: Sequence[Response], self_greedy: Sequence[Response], *,
           max_per_prompt: int | None = None, recipe: str = "x-self") -> tuple[list[PreferencePair], Counter]:
    """X+Self (GPT4o+Self, Stronger+Self): any source's answer as chosen, the target's greedy answer rejected.

    Each chosen answer on a prompt the target answered gives one pair (GPT-4o answered some prompts twice:
    two pairs, same rejected side). Unmatched prompts: ``no_self_answer``, ``no_chosen_answer``. Raises
    DataError when the two share no prompt or ``self_greedy`` holds several answers for one prompt.
    """
    drops: Counter = Counter()
    greedy = _single_answers(self_greedy, "self", drops)
    chosen = _non_empty(chosen_responses, "chosen", drops)
    chosen_ids = {r.prompt_id for r in chosen}
    require_overlap({"chosen answers": chosen_ids, "self answers": set(greedy)})
    drops["no_self_answer"] += len(chosen_ids - set(greedy))
    drops["no_chosen_answer"] += len(set(greedy) - chosen_ids)
    out = _Collector(drops, max_per_prompt)
    for answer in chosen:
        if answer.prompt_id in greedy:
            out.add(_pair(answer, greedy[answer.prompt_id], recipe, "chosen", "self"))
    return out.result()


def x_self_rm(stronger_scored: Sequence[Response], self_scored: Sequence[Response], *,
              max_per_prompt: int | None = None) -> tuple[list[PreferencePair], Counter]:
    """X+Self combined with a reward model (the study's ``--use_reward_model``): like ``x_self``, but the two
    answers swap sides when the self answer scores strictly higher; a tie keeps the stronger answer chosen.

    Which side won is visible in each pair's ``chosen_meta["role"]`` (``stronger`` or ``self``). Unmatched
    prompts: ``no_self_answer``, ``no_stronger_answer``. Raises DataError for answers that must be compared
    but have no score, for no common prompt, and for several self answers on one prompt.
    """
    drops: Counter = Counter()
    greedy = _single_answers(self_scored, "self", drops)
    stronger = _non_empty(stronger_scored, "stronger", drops)
    stronger_ids = {r.prompt_id for r in stronger}
    require_overlap({"stronger answers": stronger_ids, "self answers": set(greedy)})
    drops["no_self_answer"] += len(stronger_ids - set(greedy))
    drops["no_stronger_answer"] += len(set(greedy) - stronger_ids)
    out = _Collector(drops, max_per_prompt)
    for answer in stronger:
        mine = greedy.get(answer.prompt_id)
        if mine is None:
            continue
        if _score(mine, "self") > _score(answer, "stronger"):
            out.add(_pair(mine, answer, "x-self-rm", "self", "stronger"))
        else:  # ties keep the stronger answer as chosen
            out.add(_pair(answer, mine, "x-self-rm", "stronger", "self"))
    return out.result()


def _best_and_worst(candidates: list[tuple[str, Response]], role: str) -> tuple[tuple[str, Response],
                                                                               tuple[str, Response]]:
    """First candidate with the highest score and first with the lowest, in the given order."""
    scores = [_score(response, role) for _, response in candidates]
    best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
    worst = min(range(len(candidates)), key=lambda i: (scores[i], i))
    return candidates[best], candidates[worst]


def self_rm(self_samples_scored: Sequence[Response], *, min_samples: int = MIN_SAMPLES,
            min_chars: int = MIN_CHARS) -> tuple[list[PreferencePair], Counter]:
    """Self+RM: for each prompt, the best of the target's own samples (by reward score) as chosen and the worst
    as rejected.

    Samples are grouped by ``prompt_id``; answers shorter than ``min_chars`` (after stripping) are dropped as
    ``sample_too_short``; prompts with fewer than ``min_samples`` valid samples as ``too_few_samples``; prompts
    whose best and worst scores are equal as ``all_tied``. Among equal scores the lowest ``sample_index``
    wins. Raises DataError for a valid sample without a finite score or two samples of one prompt with the
    same ``sample_index`` (two runs concatenated), ValueError for ``min_samples < 2``.
    """
    if min_samples < 2:
        raise ValueError(f"min_samples must be >= 2 (a pair needs two answers), got {min_samples}")
    drops: Counter = Counter()
    out = _Collector(drops)
    for pid, group in sorted(_group(self_samples_scored).items()):
        indices = Counter(r.sample_index for r in group)
        repeated = [i for i, n in indices.items() if n > 1]
        if repeated:
            raise DataError(f"prompt {pid} ({group[0].prompt[:60]!r}) has {indices[repeated[0]]} samples with "
                            f"sample_index {repeated[0]}: were two sampling runs concatenated?")
        valid = []
        for response in group:
            if len(response.response.strip()) < max(min_chars, 1):
                drops["sample_too_short"] += 1
            else:
                valid.append(response)
        if len(valid) < min_samples:
            drops["too_few_samples"] += 1
            continue
        valid.sort(key=lambda r: r.sample_index)
        (_, best), (_, worst) = _best_and_worst([("self", r) for r in valid], "self sample")
        if _score(best, "self") == _score(worst, "self"):
            drops["all_tied"] += 1
            continue
        out.add(_pair(best, worst, "self-rm", "self", "self"))
    return out.result()


def pool_rm(pool_scored_by_source: Mapping[str, Sequence[Response]], *, min_sources: int = 2,
            min_samples: int = MIN_SAMPLES, min_chars: int = MIN_CHARS) -> tuple[list[PreferencePair], Counter]:
    """Peer+RM / All+RM: for each prompt, the best answer across a pool of sources (by reward score) as chosen
    and the worst as rejected.

    ``pool_scored_by_source`` maps a source label (``"gpt4o"``, ``"alpaca-7b"``, ``"self"``) to its answers;
    the label is recorded as each side's ``role``. Per prompt: answers shorter than ``min_chars`` are dropped
    (``sample_too_short``); a prompt needs valid answers from at least ``min_sources`` sources
    (``too_few_sources``: a pool pair must be able to mix models) and ``min_samples`` answers
    (``too_few_samples``); equal best and worst scores drop it (``all_tied``). Ties pick the first answer in
    the pool's source order, then input order. Best and worst may come from the same source.

    Raises DataError for a pool of fewer than two sources, for no prompt answered by ``min_sources``
    sources (naming each source and its prompt count), and for compared answers without a score.
    """
    if len(pool_scored_by_source) < 2:
        names = ", ".join(pool_scored_by_source) or "none"
        raise DataError(f"a pool needs at least 2 sources, got {len(pool_scored_by_source)} ({names}); with one "
                        "source use self-rm (the target's samples) or x-self")
    if min_sources < 1 or min_sources > len(pool_scored_by_source):
        raise ValueError(f"min_sources must be in 1..{len(pool_scored_by_source)}, got {min_sources}")
    if min_samples < 2:
        raise ValueError(f"min_samples must be >= 2 (a pair needs two answers), got {min_samples}")
    drops: Counter = Counter()
    by_prompt: dict[str, list[tuple[str, Response]]] = {}
    for label, responses in pool_scored_by_source.items():
        for response in responses:
            if len(response.response.strip()) < max(min_chars, 1):
                drops["sample_too_short"] += 1
                continue
            by_prompt.setdefault(response.prompt_id, []).append((label, response))
    if not any(len({label for label, _ in c}) >= min_sources for c in by_prompt.values()):
        sizes = ", ".join(f"{label} ({len({r.prompt_id for r in rs})} prompts)"
                          for label, rs in pool_scored_by_source.items())
        raise DataError(f"no prompt is answered by {min_sources} or more pool sources: {sizes}")
    out = _Collector(drops)
    for pid in sorted(by_prompt):
        candidates = by_prompt[pid]
        if len({label for label, _ in candidates}) < min_sources:
            drops["too_few_sources"] += 1
            continue
        if len(candidates) < min_samples:
            drops["too_few_samples"] += 1
            continue
        (best_label, best), (worst_label, worst) = _best_and_worst(candidates, "pool")
        if _score(best, "pool") == _score(worst, "pool"):
            drops["all_tied"] += 1
            continue
        out.add(_pair(best, worst, "pool-rm", best_label, worst_label))
    return out.result()


# ------------------------------------------------------------------------------------------ registries


@dataclass(frozen=True)
class Recipe:
    """A recipe by name: its function and the inputs the build command must provide."""

    name: str
    function: Callable[..., tuple[list[PreferencePair], Counter]]
    needs: tuple[str, ...]  # inputs: human, target_greedy, target_samples, chosen, pool, rm
    scored: bool  # compares reward scores
    help: str


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("original", original, ("human",), False, "human pairs as they are (safer = chosen)"),
        Recipe("hc-self", hc_self, ("human", "target_greedy"), False,
               "human-chosen answer vs the target's greedy answer"),
        Recipe("x-self", x_self, ("chosen", "target_greedy"), False,
               "another source's answer vs the target's greedy answer (GPT4o+Self, Stronger+Self)"),
        Recipe("x-self-rm", x_self_rm, ("chosen", "target_greedy", "rm"), True,
               "x-self, swapped where the reward model prefers the target's answer"),
        Recipe("self-rm", self_rm, ("target_samples", "rm"), True,
               "best vs worst of the target's own samples by reward model"),
        Recipe("pool-rm", pool_rm, ("pool", "rm"), True,
               "best vs worst across a pool of sources by reward model (Peer+RM, All+RM)"),
    ]
}

