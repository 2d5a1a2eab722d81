"""Reward models behind one interface, chosen by a spec string, and pairwise accuracy on preference sets.

    class RewardModel(Protocol):
        name: str
        def score(self, prompts: list[str], responses: list[str]) -> list[float]: ...  # higher = better/safer

Specs (``load_reward_model``):

- ``hf:<hub id or folder>``: any one-logit sequence-classification reward model, fed the text pair
  (prompt, response) truncated to 512 tokens; score = the logit. The study's is
  ``hf:OpenAssistant/reward-model-deberta-v3-large-v2``.
  A checkpoint whose config.json names ``"reward_input_format": "chat"`` is read as a chat RM.
- ``hf-chat:<hub id or folder>``: a chat-format reward model (Skywork-Reward, ArmoRM, the Llama-3.1 based RMs on
  RewardBench): the conversation through the tokenizer's chat template, one score.
- ``offline:<name or folder>`` (``offline`` alone = ``offline:safety-minilm``): a safety reward model that
  ``safepref rm train`` builds from the offline data, saved under ``$SAFEPREF_CACHE/reward/<name>/``: a head on
  frozen MiniLM embeddings (``--kind head``, folder with ``rm.json``) or a fine-tuned sequence classifier
  (``--kind finetuned``, a normal checkpoint, also loadable as ``hf:<folder>``).
- a bare folder: a saved offline reward model (it holds ``rm.json``) or a sequence-classification checkpoint.
- ``length``: the response's length in characters (a baseline for tests and length-bias ablations).

Multi-turn prompts (hh-rlhf) are passed as one string rendered by ``conversation_text``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from safepref.errors import ConfigError, SafeprefError
from safepref.records import PreferencePair
from safepref.registry import Registry


@runtime_checkable
class RewardModel(Protocol):
    name: str

    def score(self, prompts: list[str], responses: list[str]) -> list[float]: ...


class LengthRewardModel:
    """Score = number of characters of the response (longer = higher). A baseline, not a judge of safety."""

    name = "length"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        check_batch(prompts, responses)
        return [float(len(r)) for r in responses]


# kind -> loader "module:function", imported lazily so that torch / transformers load only for the kind in use.
# Loaders take (target, device=...). A new kind: its module, one line here and its help line below.
REWARD_KINDS: Registry = Registry("reward model", {
    "hf": "safepref.reward.hf:load_hf_reward_model",
    "hf-chat": "safepref.reward.hf:load_chat_reward_model",
    "offline": "safepref.reward.offline:load_offline_reward_model",
    "length": "safepref.reward:_load_length",
}, suffix=":…", help={
    "hf": "hf:<hub id or folder>: a one-logit sequence-classification reward model (text-pair input)",
    "hf-chat": "hf-chat:<hub id or folder>: a chat-format reward model (conversation through its chat template)",
    "offline": "offline:<name or folder>: a safety RM made by `safepref rm train` (default safety-minilm)",
    "length": "length: the response length in characters (a baseline)",
}, known=lambda kinds: f"Known kinds:\n{kinds.describe()}\nor give the folder of a saved reward model")


def _load_length(target: str, device: str = "auto") -> LengthRewardModel:
    if target:
        raise ConfigError(f"reward model 'length' takes no argument, got 'length:{target}'")
    return LengthRewardModel()


def describe_kinds() -> str:
    return REWARD_KINDS.describe()


def load_reward_model(spec: str, device: str = "auto") -> RewardModel:
    """A reward model from its spec (see the module docstring).

    Raises ConfigError for an unknown kind or an offline name that was never trained (listing what is
    known), ModelError for a folder or hub id that cannot be loaded.
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError(f"empty reward model spec. Known kinds:\n{describe_kinds()}")
    kind, _, target = spec.partition(":")
    if kind not in REWARD_KINDS:
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise REWARD_KINDS.unknown(spec, kind)
        if (folder / "rm.json").exists():
            kind, target = "offline", spec
        elif (folder / "config.json").exists():
            kind, target = "hf", spec
        else:
            raise ConfigError(f"folder {folder} is neither a saved offline reward model (no rm.json) nor "
                              "a Hugging Face checkpoint (no config.json)")
    if kind in ("hf", "hf-chat") and not target:
        raise ConfigError(f"reward model '{kind}' needs a hub id or folder: {kind}:<hub id or folder>")
    return REWARD_KINDS.load(kind)(target, device=device)


def check_batch(prompts: Sequence[str], responses: Sequence[str]) -> None:
    """Raise ValueError unless prompts and responses are equally long lists of strings."""
    if len(prompts) != len(responses):
        raise ValueError(f"score() got {len(prompts)} prompts but {len(responses)} responses")
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        if not isinstance(p, str) or not isinstance(r, str):
            raise ValueError(f"score() item {i}: prompt and response must be strings")


# ------------------------------------------------------------------------------------------ pair scoring


def conversation_text(messages: list[dict[str, str]]) -> str:
    """The prompt string a reward model sees: a single user turn as is; a dialogue in hh-rlhf's format."""
    if len(messages) == 1:
        return messages[0]["content"]
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages)


def user_turn_ids(pair: PreferencePair) -> set[str]:
    """Prompt ids of a pair: its own plus each user turn's, so a dialogue matches a single-turn prompt."""
    from safepref.records import prompt_id

    ids = {pair.prompt_id}
    ids.update(prompt_id(m["content"]) for m in pair.prompt if m.get("role") == "user")
    return ids


def score_pairs(rm: RewardModel, pairs: list[PreferencePair], chunk: int = 512,
                progress: bool = False) -> tuple[list[float], list[float]]:
    """Scores of the chosen and the rejected side of each pair (both sides of a chunk in one call)."""
    from tqdm.auto import tqdm

    chosen: list[float] = []
    rejected: list[float] = []
    for start in tqdm(range(0, len(pairs), chunk), disable=not progress, desc="scoring pairs", unit="chunk"):
        part = pairs[start:start + chunk]
        prompts = [conversation_text(p.prompt) for p in part]
        scores = rm.score(prompts + prompts, [p.chosen_text for p in part] + [p.rejected_text for p in part])
        if len(scores) != 2 * len(part):
            raise SafeprefError(f"reward model {rm.name} returned {len(scores)} scores for {2 * len(part)} inputs")
        chosen.extend(scores[:len(part)])
        rejected.extend(scores[len(part):])
    return chosen, rejected


# ------------------------------------------------------------------------------------------------ metrics


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sensible at 0 and n, unlike the normal one)."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    z = statistics.NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def pairwise_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float],
                      groups: Sequence[Any] | None = None, confidence: float = 0.95,
                      n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Share of pairs where the chosen side scores strictly above the rejected one (RewardBench's rule:
    a tie counts as wrong; ``accuracy_ties_half`` counts it as half).

    The interval is Wilson's, which assumes independent pairs. When ``groups`` (one label per pair, e.g. the
    prompt id) is given, a bootstrap over groups is added as ``cluster_ci``: PKU-SafeRLHF holds several pairs
    per prompt, and pairs of one prompt are not independent.

    Raises ValueError for lists of different lengths or no pairs.
    """
    if len(chosen_scores) != len(rejected_scores):
        raise ValueError(f"{len(chosen_scores)} chosen scores but {len(rejected_scores)} rejected scores")
    n = len(chosen_scores)
    if n == 0:
        raise ValueError("pairwise_accuracy needs at least one pair")
    wins = [c > r for c, r in zip(chosen_scores, rejected_scores, strict=True)]
    ties = sum(c == r for c, r in zip(chosen_scores, rejected_scores, strict=True))
    correct = sum(wins)
    low, high = wilson_interval(correct, n, confidence)
    result: dict[str, Any] = {
        "accuracy": correct / n,
        "n": n,
        "correct": correct,
        "ties": ties,
        "accuracy_ties_half": (correct + 0.5 * ties) / n,
        "ci_low": low,
        "ci_high": high,
        "ci_method": "wilson",
        "confidence": confidence,
        "mean_margin": sum(c - r for c, r in zip(chosen_scores, rejected_scores, strict=True)) / n,
    }
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"{len(groups)} group labels for {n} pairs")
        result.update(_cluster_bootstrap(wins, list(groups), confidence, n_boot, seed))
    return result


def _cluster_bootstrap(wins: list[bool], groups: list[Any], confidence: float, n_boot: int,
                       seed: int) -> dict[str, Any]:
    import numpy as np

    index: dict[Any, int] = {}
    codes = np.array([index.setdefault(g, len(index)) for g in groups])
    correct = np.bincount(codes, weights=np.asarray(wins, dtype=float), minlength=len(index))
    sizes = np.bincount(codes, minlength=len(index)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(index), size=(n_boot, len(index)))  # (B, G) resampled groups
    accuracies = correct[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    alpha = (1 - confidence) / 2
    return {"n_groups": len(index),
            "cluster_ci": [float(np.quantile(accuracies, alpha)), float(np.quantile(accuracies, 1 - alpha))]}
