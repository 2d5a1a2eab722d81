"""Sentence embedders of the offline head reward model (``offline.py``): all-MiniLM-L6-v2 with an on-disk cache,
and a hashed bag of words for tests. ``describe()`` is saved with a model so it can rebuild its embedder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safepref import paths
from safepref.errors import ConfigError

log = logging.getLogger(__name__)


class Embedder:
    """Turns texts into an (n, dim) float32 array; ``describe()`` is saved with the model to rebuild it."""

    name: str
    dim: int

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


from safepref.models import MINILM_ENV, MINILM_PACKAGE  # noqa: E402 - one locator for every MiniLM user
from safepref.models import minilm_folder as minilm_dir  # noqa: E402


class EmbeddingCache:
    """Text -> vector store in SQLite (WAL mode: several readers, one writer). Keys hash the text and the
    embedder's settings; vectors are raw float32 bytes (read with ``np.frombuffer``: nothing is unpickled)."""

    def __init__(self, path: Path, salt: str) -> None:
        self.path = path
        self.salt = salt
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        self.db.commit()

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.salt}\0{text}".encode()).hexdigest()[:32]

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob in self.db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                            [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()])
        self.db.commit()


PRECISION_ENV = "SAFEPREF_EMBED_PRECISION"  # float32 | bfloat16 | auto (the default)
PRECISIONS = ("auto", "float32", "bfloat16")


def embed_precision(device: str) -> str:
    """float32, or bfloat16 on a CPU that computes it natively (AVX512-BF16 or AMX): 1.6x the texts/s
    of float32 at the same batch on the 2-core EPYC, vectors at cosine >= 0.9999 of float32's
    (benchmarks/embedding.py).
    ``$SAFEPREF_EMBED_PRECISION`` overrides; a GPU stays float32 (fast enough, and the vectors it caches
    equal the CPU's float32 ones)."""
    import os

    from safepref.models import cpu_has_bf16

    wanted = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if wanted not in PRECISIONS:
        raise ConfigError(f"{PRECISION_ENV}={wanted!r}: must be one of {', '.join(PRECISIONS)}")
    if wanted != "auto":
        return wanted
    return "bfloat16" if device == "cpu" and cpu_has_bf16() else "float32"


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 through sentence-transformers (mean pooling, unit norm), cached on disk.

    Work goes in chunks of ``chunk`` texts, each committed to the cache, so an interrupted run loses at
    most one chunk. On a CPU: batches of 16 (less padding; 1.4x the texts/s of 64) and bfloat16 where the CPU
    has it (``embed_precision``); the cache keeps each precision's vectors apart.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, device: str = "auto", batch_size: int | None = None, max_seq_length: int = 256,
                 cache: bool = True, chunk: int = 512, progress: bool = False) -> None:
        from safepref.models import pick_device

        self.device = pick_device(device)
        self.batch_size = batch_size or (16 if self.device == "cpu" else 64)
        self.precision = embed_precision(self.device)
        self.max_seq_length = max_seq_length
        self.chunk = chunk
        self.progress = progress
        self.version = importlib.metadata.version(MINILM_PACKAGE) if _installed(MINILM_PACKAGE) else "?"
        import os

        # Cached vectors are only valid for the same weights and precision: an overriding folder gets its own keys.
        override = os.environ.get(MINILM_ENV)
        salt = f"{self.name}|{self.version}|{max_seq_length}" + (f"|{override}" if override else "") \
            + ("" if self.precision == "float32" else f"|{self.precision}")
        self.cache = EmbeddingCache(paths.cache_dir("embeddings") / "all-MiniLM-L6-v2.sqlite", salt) \
            if cache else None
        self._model: Any = None
        self.seconds_embedding = 0.0
        self.texts_embedded = 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "package": f"{MINILM_PACKAGE}=={self.version}",
                "max_seq_length": self.max_seq_length, "dim": self.dim, "precision": self.precision}

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            # A local folder: never ask the hub (offline machines), without touching the process's env.
            model = SentenceTransformer(str(minilm_dir()), device=self.device, local_files_only=True)
            self._model = model.float()  # float32 weights; bfloat16 only as autocast (``_encode``)
            self._model.max_seq_length = self.max_seq_length
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        import contextlib

        import torch

        start = time.perf_counter()
        model = self._load()
        autocast = torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16) if self.precision == "bfloat16" \
            else contextlib.nullcontext()
        with autocast:
            vectors = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False)
        self.seconds_embedding += time.perf_counter() - start
        self.texts_embedded += len(texts)
        return np.asarray(vectors, dtype=np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from tqdm.auto import tqdm

        unique = list(dict.fromkeys(texts))
        vectors: dict[str, np.ndarray] = {}
        if self.cache is not None:
            keys = {t: self.cache.key(t) for t in unique}
            hits = self.cache.get(list(keys.values()))
            vectors = {t: hits[k] for t, k in keys.items() if k in hits}
        # Longest first: sentence-transformers sorts by length only inside one encode() call (a chunk), so chunks
        # of mixed lengths each pad a batch to their longest text; sorted across chunks, batches hold texts of
        # about one length (15% fewer padded tokens on the safety judge's training texts). Vectors are per text.
        missing = sorted((t for t in unique if t not in vectors), key=len, reverse=True)
        if missing:
            log.log(logging.INFO if len(missing) >= self.chunk else logging.DEBUG,
                    "embedding %d new texts (%d cached) with %s", len(missing), len(vectors), self.name)
        for start in tqdm(range(0, len(missing), self.chunk), disable=not (self.progress and missing),
                          desc="embedding", unit="chunk"):
            chunk = missing[start:start + self.chunk]
            encoded = dict(zip(chunk, self._encode(chunk), strict=True))
            vectors.update(encoded)
            if self.cache is not None:
                self.cache.put({self.cache.key(t): v for t, v in encoded.items()})
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([vectors[t] for t in texts])


class HashingEmbedder(Embedder):
    """Bag of word unigrams and bigrams hashed into ``dim`` buckets, unit norm (scikit-learn).

    No model and no cache: instant and deterministic. A baseline for the feature comparison, and the
    embedder tests use.
    """

    name = "hashing"

    def __init__(self, dim: int = 1024, **_: Any) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.dim = dim
        self._vectorizer = HashingVectorizer(n_features=dim, ngram_range=(1, 2), alternate_sign=False,
                                             norm="l2")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._vectorizer.transform(list(texts)).toarray().astype(np.float32)


EMBEDDERS: dict[str, type[Embedder]] = {"all-MiniLM-L6-v2": MiniLMEmbedder, "hashing": HashingEmbedder}


def make_embedder(description: dict[str, Any] | str, device: str = "auto", progress: bool = False) -> Embedder:
    """An embedder from its name or its saved ``describe()``; unknown names fail with the known ones."""
    info = {"name": description} if isinstance(description, str) else dict(description)
    name = info.get("name")
    if name not in EMBEDDERS:
        raise ConfigError(f"unknown embedder '{name}'; known: {', '.join(EMBEDDERS)}")
    if name == "hashing":
        return HashingEmbedder(dim=int(info.get("dim", 1024)))
    return MiniLMEmbedder(device=device, max_seq_length=int(info.get("max_seq_length", 256)), progress=progress)


def _installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
