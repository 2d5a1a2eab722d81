"""A chat-completions client for any OpenAI-compatible endpoint: concurrent, retried, cached on disk.

    client = ChatClient("gpt-4o", cache_dir="out/api_cache")                  # key from $OPENAI_API_KEY
    client = ChatClient("local", base_url="http://127.0.0.1:8000/v1")         # a local server, no key
    answers = client.complete_many([[{"role": "user", "content": "Hi"}]], temperature=0, max_tokens=64)

Used by the ``openai`` generation backend and by the rubric judge. Behaviour:

- Requests run ``concurrency`` at a time (a thread pool over the official ``openai`` client). Answers come
  back in input order.
- Every answer is written to the cache as soon as it arrives: one JSON file per request, written atomically,
  named by a hash of (endpoint, model, messages, sampling parameters). A crashed or failed run loses nothing
  and a rerun only sends what is missing. The API key is never part of the hash nor of the file.
- Rate limits (429), timeouts, connection errors, 408/409 and 5xx are retried with exponential backoff and
  jitter (a server's ``Retry-After`` is honoured). When retries run out, BackendError names the endpoint and
  the reason; the answers that did arrive stay cached.
- A rejected key (401/403) raises BackendError at once, naming the environment variable, never its value.
- Keys come from the environment only (``api_key_env``). A local server (``base_url`` given) may need none:
  when the variable is unset, a placeholder is sent. Note that when it *is* set, its key goes to that
  server, as with the ``openai`` package itself: name another variable for a third-party endpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from safepref.errors import BackendError
from safepref.records import write_json
from safepref.redact import redact_text

Messages = list[dict[str, str]]

OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY_PLACEHOLDER = "not-needed"
CACHE_VERSION = 1
# Status codes worth another try: timeout, conflict/lock, rate limit, and server-side failures.
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
# Anything that looks like an OpenAI-style secret, in case a server echoes (part of) a key back.
_SECRET_PATTERN = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-*]{6,}")


def public_url(url: str) -> str:
    """``url`` without user:password and query string, so that it can be logged, cached and reported."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def request_key(base_url: str, model: str, messages: Messages, sampling: dict[str, Any]) -> str:
    """Cache key of one request: sha256 of the canonical JSON of everything that shapes its answer."""
    blob = json.dumps({"v": CACHE_VERSION, "base_url": public_url(base_url), "model": model,
                       "messages": messages, "sampling": sampling},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class _Fatal(Exception):
    """Internal: a failure that more tries cannot fix (stops the whole batch)."""


class ChatClient:
    """Chat completions against one endpoint and model, with a disk cache, retries and a concurrency limit.

    ``complete_many(message_lists, **sampling)`` returns the first choice of each request;
    ``choices_many(...)`` returns every choice (``n`` > 1). ``sampling`` holds request parameters as the
    ``openai`` package takes them (``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``n``, ``stop``,
    ``extra_body`` ...); all of it is part of the cache key. ``stats`` counts ``requests`` (sent and
    answered), ``cache_hits``, ``retries`` and ``failures`` over the client's lifetime.
    """

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, max_retries: int = 5, timeout: float = 60.0,
                 cache_dir: str | Path | None = None, retry_base_delay: float = 1.0,
                 retry_max_delay: float = 60.0, progress: bool = True) -> None:
        if not model:
            raise BackendError("ChatClient needs a model name")
        if concurrency < 1:
            raise BackendError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise BackendError(f"max_retries must be >= 0, got {max_retries}")
        if not api_key_env or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
            # A key pasted where the variable *name* belongs must not end up in a message.
            raise BackendError("api_key_env must be the name of an environment variable (e.g. OPENAI_API_KEY), "
                               "not a key: keys are read from the environment only")
        self.model = model
        self.local = base_url is not None
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")
        self.endpoint = public_url(self.base_url)
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self.progress = progress
        self.stats: Counter = Counter()
        self._memory: dict[str, list[str]] = {}  # answers of this process, also when there is no cache_dir
        self._lock = threading.Lock()
        self._client: Any = None
        self._rng = random.Random()

    def describe(self) -> dict[str, Any]:
        """Provenance: endpoint and model, and the *name* of the key variable (never its value)."""
        return {"base_url": self.endpoint, "model": self.model, "api_key_env": self.api_key_env}

    # ------------------------------------------------------------------------------------------ public

    def complete(self, messages: Messages, **sampling: Any) -> str:
        return self.complete_many([messages], **sampling)[0]

    def complete_many(self, message_lists: list[Messages], **sampling: Any) -> list[str]:
        """First choice of each request, in input order."""
        return [choices[0] if choices else "" for choices in self.choices_many(message_lists, **sampling)]

    def choices_many(self, message_lists: list[Messages], per_request: list[dict[str, Any]] | None = None,
                     desc: str = "api", **sampling: Any) -> list[list[str]]:
        """All choices of each request, in input order (a server that ignores ``n`` returns one).

        ``per_request[i]`` (e.g. a ``seed``) is merged over ``sampling`` for request ``i``.
        """
        for messages in message_lists:
            _check_messages(messages)
        if per_request is not None and len(per_request) != len(message_lists):
            raise BackendError(f"per_request has {len(per_request)} entries for {len(message_lists)} requests")
        params = [{**sampling, **(per_request[i] if per_request else {})} for i in range(len(message_lists))]
        keys = [request_key(self.base_url, self.model, m, p) for m, p in zip(message_lists, params, strict=True)]
        results: list[list[str] | None] = [self._cached(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        with self._lock:
            self.stats["cache_hits"] += len(keys) - len(todo)
        if not todo:
            return results  # type: ignore[return-value]
        # Identical requests in one call are sent once.
        first_of: dict[str, int] = {}
        for i in todo:
            first_of.setdefault(keys[i], i)
        unique = list(first_of.values())

        from tqdm.auto import tqdm

        client = self._get_client()
        bar = tqdm(total=len(keys), initial=len(keys) - len(todo), desc=desc, unit="req",
                   disable=not self.progress or len(unique) < 2, leave=False)
        errors: list[BaseException] = []
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(unique)), thread_name_prefix="api")
        try:
            futures: dict[Future, int] = {
                pool.submit(self._request, client, keys[i], message_lists[i], params[i]): i for i in unique}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:
                        errors.append(future.exception())  # type: ignore[arg-type]
                    else:
                        results[futures[future]] = future.result()
                        bar.update(1)
                if errors:
                    # Stop sending new requests; the ones in flight finish and are cached.
                    for future in pending:
                        future.cancel()
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        if errors:
            self.stats["failures"] += len(errors)
            # Requests that were in flight when the first error came finished during shutdown: cached too.
            answered = sum(1 for f in futures if f.done() and not f.cancelled() and f.exception() is None)
            raise self._batch_error(errors[0], answered=answered)
        for i in todo:
            if results[i] is None:
                results[i] = results[first_of[keys[i]]]
        return results  # type: ignore[return-value]

    # ----------------------------------------------------------------------------------------- private

    def _get_client(self) -> Any:
        if self._client is None:
            import openai

            key = os.environ.get(self.api_key_env)
            if not key:
                if not self.local:
                    raise BackendError(
                        f"no API key for {self.endpoint}: set the environment variable {self.api_key_env} "
                        f"(keys are read from the environment only), or give --base-url for a local server")
                key = NO_KEY_PLACEHOLDER
            # The HTTP layer logs every request at INFO; one line per answer drowns the progress bar.
            for name in ("httpx", "httpx2"):
                if logging.getLogger(name).level == logging.NOTSET:
                    logging.getLogger(name).setLevel(logging.WARNING)
            # Retries are ours (with caching between tries), not the package's.
            self._client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout,
                                         max_retries=0)
        return self._client

    def _cache_file(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir is not None else None

    def _cached(self, key: str) -> list[str] | None:
        if key in self._memory:
            return self._memory[key]
        path = self._cache_file(key)
        if path is None or not path.exists():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            choices = entry["choices"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable entry: ask again, the new answer replaces it
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            return None
        self._memory[key] = choices
        return choices

    def _store(self, key: str, messages: Messages, sampling: dict[str, Any], response: Any,
               seconds: float) -> list[str]:
        choices = [_choice_text(c) for c in sorted(response.choices, key=lambda c: c.index or 0)]
        with self._lock:
            self._memory[key] = choices
        path = self._cache_file(key)
        if path is not None:
            usage = response.usage.model_dump() if getattr(response, "usage", None) is not None else None
            write_json(path, {
                "key": key,
                "request": {"base_url": self.endpoint, "model": self.model, "messages": messages,
                            "sampling": sampling},
                "choices": choices,
                "finish_reasons": [c.finish_reason for c in response.choices],
                "response_model": getattr(response, "model", None),
                "usage": usage,
                "seconds": round(seconds, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })
        return choices

    def _request(self, client: Any, key: str, messages: Messages, sampling: dict[str, Any]) -> list[str]:
        import openai

        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = client.chat.completions.create(model=self.model, messages=messages, **sampling)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise _Fatal(self._auth_message(exc)) from None
            except openai.APIStatusError as exc:
                if exc.status_code not in RETRY_STATUS:
                    raise _Fatal(f"{self.endpoint} refused the request (HTTP {exc.status_code}): "
                                 f"{self._redact(_server_message(exc))}") from None
                reason = f"HTTP {exc.status_code}: {self._redact(_server_message(exc))}"
                retry_after = _retry_after(exc)
            except openai.APITimeoutError:
                reason, retry_after = f"no answer within {self.timeout:g} s (timeout)", None
            except openai.APIConnectionError as exc:
                reason, retry_after = f"cannot connect ({self._redact(_cause(exc))})", None
            else:
                if not getattr(response, "choices", None):
                    raise _Fatal(f"{self.endpoint} answered without any choice (model {self.model!r})")
                with self._lock:
                    self.stats["requests"] += 1
                return self._store(key, messages, sampling, response, time.monotonic() - started)
            if attempt >= self.max_retries:
                raise _Exhausted(reason, attempt + 1)
            delay = min(self.retry_max_delay, self.retry_base_delay * 2 ** attempt)
            delay = delay * (0.5 + self._rng.random())  # jitter: concurrent workers do not retry in step
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.retry_max_delay))
            with self._lock:
                self.stats["retries"] += 1
            time.sleep(delay)
            attempt += 1

    def _auth_message(self, exc: Any) -> str:
        status = getattr(exc, "status_code", "?")
        if os.environ.get(self.api_key_env):
            # The server's own text is left out: OpenAI's quotes part of the rejected key.
            return (f"{self.endpoint} rejected the API key in ${self.api_key_env} (HTTP {status}, "
                    f"authentication failed): check that the variable holds a valid key for this endpoint")
        return (f"{self.endpoint} needs an API key (HTTP {status}) and ${self.api_key_env} is not set: "
                f"export it (keys are read from the environment only)")

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        return redact_text(_SECRET_PATTERN.sub("***", text), [self.api_key_env])

    def _batch_error(self, error: BaseException, answered: int) -> BackendError:
        if self.cache_dir is not None:
            kept = f"{answered} new answer(s) are cached in {self.cache_dir}; rerun to continue"
        else:
            kept = f"{answered} new answer(s) were received but there is no cache_dir to keep them"
        if isinstance(error, _Fatal):
            return BackendError(f"{error} ({kept})")
        if isinstance(error, _Exhausted):
            return BackendError(f"{self.endpoint} failed after {error.tries} tries: {error.reason} "
                                f"(model {self.model!r}; {kept})")
        if isinstance(error, BackendError):
            return error
        return BackendError(f"request to {self.endpoint} failed: {type(error).__name__}: "
                            f"{self._redact(str(error))} ({kept})")


class _Exhausted(Exception):
    def __init__(self, reason: str, tries: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tries = tries


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise BackendError("each request needs a non-empty list of messages")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BackendError(f"each message needs a string 'role' and 'content', got {str(m)[:80]!r}")


def _choice_text(choice: Any) -> str:
    message = choice.message
    # A model's refusal may come in its own field with empty content (OpenAI structured outputs).
    return message.content if message.content is not None else (getattr(message, "refusal", None) or "")


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if body.get("detail"):
            return str(body["detail"])[:300]
    return str(getattr(exc, "message", exc))[:300]


def _cause(exc: BaseException) -> str:
    """The underlying network error (``Connection refused``...) that the client's message hides."""
    cause: BaseException | None = exc
    for _ in range(5):
        cause = cause.__cause__ or cause.__context__ if cause is not None else None
        if cause is None:
            break
        if str(cause):
            return f"{type(cause).__name__}: {cause}"
    return str(exc)


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
