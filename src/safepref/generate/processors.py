"""Logits processors for the whole batch on the GPU, with static shapes so that a decoding step can be captured.

transformers' own ``RepetitionPenaltyLogitsProcessor`` and ``NoRepeatNGramLogitsProcessor`` (5.17, 5.24) are
vectorised too, but they read ``input_ids`` of a length that grows every step, so a step that uses them cannot be
replayed as one CUDA graph. The functions here take a fixed-size token buffer plus the number of filled
positions as a tensor, and keep the repetition penalty's "seen" set as a ``(B, V)`` mask updated in place:

- ``presence_mask(tokens, vocab_size, lengths)`` / ``mark_seen_(seen, new_tokens)``
- ``apply_repetition_penalty(scores, seen, penalty)``
- ``banned_ngram_mask(tokens, lengths, ngram_size, vocab_size)``

The two ``LogitsProcessor`` subclasses wrap them for ``model.generate(logits_processor=...)``; on the same
``input_ids`` and scores they return exactly what the stock processors return (tests/test_fast_generation.py),
left padding included.

Left padding: transformers 5.24's ``generate`` leaves it out of the repetition penalty (``prompt_ignore_length``)
and, like every version, keeps it in the n-gram windows; the fast backend does the same. (5.17's ``generate``
also penalised the pad token in padded rows: an answer then depended on the length of its batch companions.)
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


def _spare_column(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    # Ids the lm head cannot produce (embedding larger than the output vocabulary) go to a spare column past
    # the vocabulary, as the stock processors do, so that they neither index out of range nor mark a real token.
    return ids.clamp(min=0, max=vocab_size)


def presence_mask(tokens: torch.Tensor, vocab_size: int, lengths: torch.Tensor | None = None,
                  counted: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, V)`` bool: which token ids occur in ``tokens[b, :lengths[b]]`` (all of each row without lengths).

    ``counted``: optional ``(B, W)`` bool, positions to count at all (False for left padding).
    """
    batch, width = tokens.shape
    ids = _spare_column(tokens, vocab_size)
    if lengths is not None:
        filled = torch.arange(width, device=tokens.device) < lengths.reshape(-1, 1)
        counted = filled if counted is None else counted & filled
    if counted is not None:
        ids = torch.where(counted, ids, vocab_size)
    seen = torch.zeros((batch, vocab_size + 1), dtype=torch.bool, device=tokens.device)
    seen.scatter_(1, ids, True)
    return seen[:, :vocab_size]


def mark_seen_(seen: torch.Tensor, new_tokens: torch.Tensor) -> None:
    """Add one token per row (``(B,)`` or ``(B, 1)``) to the ``(B, V)`` seen mask, in place."""
    ids = new_tokens.reshape(-1, 1).clamp(min=0, max=seen.shape[1] - 1)
    inside = (new_tokens.reshape(-1, 1) < seen.shape[1]) & (new_tokens.reshape(-1, 1) >= 0)
    # Out-of-vocabulary ids write False into an arbitrary column's current value: a no-op.
    seen.scatter_(1, ids, seen.gather(1, ids) | inside)


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL penalty (Keskar et al. 2019) on every seen token: negative scores times ``penalty``, others divided."""
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalised, scores)


def banned_ngram_mask(tokens: torch.Tensor, lengths: torch.Tensor, ngram_size: int, vocab_size: int) -> torch.Tensor:
    """``(B, V)`` bool: tokens that would complete an n-gram already present in ``tokens[b, :lengths[b]]``.

    ``tokens``: ``(B, W)`` buffer (positions at or past ``lengths`` are ignored); ``lengths``: ``(B,)`` or a
    scalar tensor. The prefix is the last ``n - 1`` filled tokens; every complete window whose first ``n - 1``
    tokens equal it bans its last token. All shapes are static: O(B * W * n) work, no host sync.
    """
    batch, width = tokens.shape
    n = ngram_size
    banned = torch.zeros((batch, vocab_size + 1), dtype=torch.bool, device=tokens.device)
    if width < n:
        return banned[:, :vocab_size]
    lengths = lengths.reshape(-1, 1).expand(batch, 1)
    # (B, n-1): the last n-1 filled tokens; rows shorter than that have no complete window either.
    offsets = torch.arange(n - 1, device=tokens.device)
    prefix = tokens.gather(1, (lengths - (n - 1) + offsets).clamp(min=0, max=width - 1))
    windows = tokens.unfold(1, n, 1)  # (B, W - n + 1, n), a view
    starts = torch.arange(windows.shape[1], device=tokens.device)
    complete = starts <= lengths - n  # (B, W - n + 1): the window lies inside the filled part
    matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1) & complete
    last = _spare_column(windows[..., -1], vocab_size)
    banned.scatter_(1, torch.where(matches, last, vocab_size), True)
    return banned[:, :vocab_size]


class FastRepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Drop-in for ``RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length)``: a presence mask.

    ``prompt_ignore_length``: leading tokens not counted, an int or one per row (``generate`` in transformers
    5.24 passes each row's left-padding length; 5.17 passed nothing, so pad tokens counted as seen).
    """

    def __init__(self, penalty: float, prompt_ignore_length: int | torch.Tensor | None = None) -> None:
        if not isinstance(penalty, float) or not penalty > 0:
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {penalty}")
        self.penalty = penalty
        self.prompt_ignore_length = prompt_ignore_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        counted = None
        if self.prompt_ignore_length is not None:
            skip = torch.as_tensor(self.prompt_ignore_length, device=input_ids.device).reshape(-1, 1)
            counted = torch.arange(input_ids.shape[1], device=input_ids.device) >= skip
            counted = counted.expand(input_ids.shape)
        seen = presence_mask(input_ids, scores.shape[-1], counted=counted)
        return apply_repetition_penalty(scores, seen, self.penalty)


class FastNoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Drop-in for ``NoRepeatNGramLogitsProcessor(ngram_size)`` built on ``banned_ngram_mask``."""

    def __init__(self, ngram_size: int) -> None:
        if not isinstance(ngram_size, int) or ngram_size <= 0:
            raise ValueError(f"`ngram_size` has to be a strictly positive integer, but is {ngram_size}")
        self.ngram_size = ngram_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = torch.tensor(input_ids.shape[1], device=input_ids.device)
        banned = banned_ngram_mask(input_ids, length, self.ngram_size, scores.shape[-1])
        return scores.masked_fill(banned, -float("inf"))
