"""The study's conditions in one table: what each one is, which recipe builds it, from which inputs.

Read by ``safepref build`` (which recipe and inputs a condition name means), ``safepref run`` (what an
experiment must provide for it, which generations of the target it needs, which flags its build stage gets)
and the report (order, kind, label). Adding a condition is one entry here plus, for a new kind of pairing,
a recipe function in ``safepref.recipes`` (with its line in ``RECIPES``).

Nothing here imports the pipeline, the report or any model code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Inputs of `safepref build` a condition may need (``needs``). The target's generations come from
# ``target_greedy`` (the study's greedy pass) and ``target_samples`` (its sampling pass).
GENERATION_OF_INPUT = {"target_greedy": "greedy", "target_samples": "sample"}

# What an experiment sets for a role a condition draws answers from (``roles``), as the error says it.
ROLE_HELP = {
    "human": "human-labelled pairs: set `human` (offline: pku-realign)",
    "gpt4o": "GPT-4o answers: set roles.gpt4o to a name under `answers` (offline: {source: gpt4o}, 180 PKU test "
             "prompts)",
    "stronger": "a stronger model's answers: set roles.stronger (offline proxy: {source: pku-safe-sft}, Alpaca-7B)",
    "peers": "answers of at least two peer models: roles.peers",
    "others": "at least one other model's answers (roles.gpt4o, roles.stronger or roles.peers)",
}


@dataclass(frozen=True)
class Condition:
    """One condition: a bar of the study's main figure (``main``) or one of its variants.

    ``needs`` are the build inputs (``human``, ``target_greedy``, ``target_samples``, ``chosen``, ``pool``,
    ``rm``); ``optional`` inputs build also accepts. ``roles`` name where `safepref run` takes ``chosen`` (one
    role) or ``pool`` (every named answer of these roles) from. ``paper`` says what the study used for each
    input; ``offline`` what the offline data offers (``None`` where it offers nothing faithful;
    ``offline_note`` says why and what would be needed). ``kind``: start (the model itself), human, multi
    (the two sides come from different models: the study's pitfall) or self (the target alone).
    """

    name: str
    label: str
    recipe: str | None
    needs: tuple[str, ...]
    chosen: str
    rejected: str
    paper: Mapping[str, Any] = field(default_factory=dict)
    offline: Mapping[str, Any] | None = None
    offline_note: str = ""
    kind: str = "multi"
    order: int = 0  # position among the study's eight bars (main), or after them (variants)
    main: bool = True
    roles: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    proxy_role: str | None = None  # labelled a proxy when the experiment sets roles.<proxy_role>_proxy

    @property
    def generations(self) -> tuple[str, ...]:
        """The target's generations (greedy, sample) its build reads."""
        return tuple(GENERATION_OF_INPUT[n] for n in self.needs if n in GENERATION_OF_INPUT)


_STUDY_RM = "hf:OpenAssistant/reward-model-deberta-v3-large-v2"

CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in [
        Condition("sft", "SFT", None, (), "(no DPO: the starting model)", "",
                  offline={}, offline_note="the target model itself; nothing to build", kind="start", order=0),
        Condition("original", "Original Dataset", "original", ("human",),
                  "PKU-SafeRLHF safer response", "PKU-SafeRLHF other response",
                  paper={"human": "pku-saferlhf"}, offline={"human": "pku-realign"},
                  offline_note="pku-realign: 5,135 PKU-SafeRLHF pairs (930 prompts) where exactly one answer is safe",
                  kind="human", order=6, roles=("human",)),
        Condition("hc-self", "HC+Self", "hc-self", ("human", "target_greedy"),
                  "PKU-SafeRLHF safer response", "target model's greedy answer",
                  paper={"human": "pku-saferlhf"}, offline={"human": "pku-realign"}, order=1, roles=("human",)),
        Condition("gpt4o-self", "GPT4o+Self", "x-self", ("chosen", "target_greedy"),
                  "GPT-4o answer", "target model's greedy answer",
                  paper={"chosen": "gpt-4o answers to the 10k train prompts"}, offline={"chosen": "gpt4o"},
                  offline_note="gpt4o: 201 answers to 180 pku-paper test prompts only", order=2, roles=("gpt4o",)),
        Condition("stronger-self", "Stronger+Self", "x-self", ("chosen", "target_greedy"),
                  "a larger model's answer", "target model's greedy answer",
                  paper={"chosen": "a larger sibling's answers (e.g. Llama-3.1-70B-Instruct for Llama-3.1-8B)"},
                  offline={"chosen": "pku-safe-sft"},
                  offline_note="pku-safe-sft: safe answers written by Alpaca-7B (50x the 135M target) on PKU "
                               "prompts; gpt35-safety (gpt-3.5-turbo) answers only red-team prompts",
                  order=3, roles=("stronger",)),
        Condition("peer-rm", "Peer+RM", "pool-rm", ("pool", "rm"),
                  "best of several peer models' answers by RM", "worst of them",
                  paper={"pool": "answers of the other 7-8B models on the same prompts", "rm": _STUDY_RM},
                  offline=None,
                  offline_note="no peer model (same size class as the target) answered PKU prompts offline; "
                               "a proxy pool of non-target models (pku-safe-sft + gpt4o) can be built",
                  order=4, roles=("peers",), proxy_role="peers"),
        Condition("all-rm", "All+RM", "pool-rm", ("pool", "target_samples", "rm"),
                  "best of all sources (self, peers, stronger, GPT-4o) by RM", "worst of them",
                  paper={"pool": "self samples + peers + stronger + GPT-4o", "rm": _STUDY_RM},
                  offline={"pool": ["pku-safe-sft", "gpt4o"]},
                  offline_note="no peers: the pool is self samples + Alpaca-7B (pku-safe-sft) + GPT-4o",
                  order=5, roles=("gpt4o", "stronger", "peers"), optional=("target_greedy",)),
        Condition("self-rm", "Self+RM", "self-rm", ("target_samples", "rm"),
                  "best of 5 own samples by RM", "worst of the 5",
                  paper={"rm": _STUDY_RM}, offline={}, kind="self", order=7),
        # The study's "combine with reward model" variants (not bars of its main figure): x-self-rm.
        Condition("gpt4o-self-rm", "GPT4o+Self (RM swap)", "x-self-rm", ("chosen", "target_greedy", "rm"),
                  "GPT-4o answer, or the target's where the RM scores it higher", "the other one",
                  paper={"chosen": "gpt-4o answers to the 10k train prompts", "rm": _STUDY_RM},
                  offline={"chosen": "gpt4o"},
                  offline_note="gpt4o: 201 answers to 180 pku-paper test prompts only",
                  order=8, main=False, roles=("gpt4o",)),
        Condition("stronger-self-rm", "Stronger+Self (RM swap)", "x-self-rm", ("chosen", "target_greedy", "rm"),
                  "a larger model's answer, or the target's where the RM scores it higher", "the other one",
                  paper={"chosen": "a larger sibling's answers", "rm": _STUDY_RM},
                  offline={"chosen": "pku-safe-sft"},
                  offline_note="pku-safe-sft: safe answers written by Alpaca-7B on PKU prompts",
                  order=9, main=False, roles=("stronger",)),
    ]
}

# The study's eight bars in the order of its figure, then the variants (run only when listed).
CONDITION_ORDER = [c.name for c in sorted(CONDITIONS.values(), key=lambda c: c.order) if c.main]
EXTRA_CONDITIONS = [c.name for c in sorted(CONDITIONS.values(), key=lambda c: c.order) if not c.main]
CONDITION_KIND = {name: c.kind for name, c in CONDITIONS.items()}


def answer_names(condition: Condition, roles: Any) -> list[str]:
    """The named answers a condition's ``chosen`` or ``pool`` input takes from an experiment's ``roles``
    (its Roles section), in role order, each once."""
    names: list[str] = []
    for role in condition.roles:
        if role == "human":
            continue
        value = getattr(roles, role)
        names += value if isinstance(value, list) else [value] if value else []
    return list(dict.fromkeys(names))


def missing_role(condition: Condition, exp: Any) -> str | None:
    """What experiment ``exp`` lacks to build ``condition`` (a ROLE_HELP text), or None."""
    if "human" in condition.roles and not exp.human:
        return ROLE_HELP["human"]
    if "chosen" in condition.needs:
        role = next(r for r in condition.roles if r != "human")
        return None if getattr(exp.roles, role) else ROLE_HELP[role]
    if "pool" in condition.needs:
        # a pool needs two sources; the target's own samples count as one ("self")
        enough = len(answer_names(condition, exp.roles)) + ("target_samples" in condition.needs) >= 2
        return None if enough else ROLE_HELP["others" if len(condition.roles) > 1 else condition.roles[0]]
    return None
