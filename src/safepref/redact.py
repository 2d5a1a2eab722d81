"""Keep secrets out of everything safepref records or prints: commands, URLs and error messages.

One helper for every place a command line or an endpoint is written down (``metrics.json``, ``run.json``,
datasheets, reports) and for error text that a server may have filled with (part of) a key::

    command_line(["safepref", "eval", "--judge-base-url", "http://u:sk-1@host/v1?token=abc"])
    # -> "safepref eval --judge-base-url 'http://host/v1?token=***'"

What is removed: the ``user:password@`` part of any URL, the value of every query parameter whose name looks
secret (token, key, secret, password, auth, signature, ...), anything shaped like an OpenAI-style key
(``sk-…``), and the value or any 4+ character piece of the keys held in the environment variables named.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_SECRET_PARAM = re.compile(r"(?i)(token|key|secret|pass|pwd|auth|sig|credential|session|cookie)")
_KEY_SHAPE = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-*]{6,}")
# A key echoed in part by a server, e.g. "abcd****wxyz": a word holding a run of 3+ asterisks.
_PARTIAL_KEY = re.compile(r"[A-Za-z0-9_\-.]*\*{3,}[A-Za-z0-9_\-.]*")
_WORD = re.compile(r"[A-Za-z0-9_\-.]{4,}")
# Environment variables whose values are masked wherever they appear.
KEY_ENVS = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def redact_url(url: str) -> str:
    """``url`` without user-info and with secret-looking query values masked; other parts kept."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # malformed (e.g. a bad port): keep nothing after the scheme's host guess
        return re.sub(r"//[^/@]*@", "//", url.split("?", 1)[0])
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_PARAM.search(k) or _KEY_SHAPE.search(v) else v)
                           for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, key_envs: Iterable[str] = ()) -> str:
    """``text`` with every URL redacted (``redact_url``), key-shaped words masked, and the values (or any
    4+ character piece) of the keys in ``key_envs`` and ``KEY_ENVS`` masked."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _KEY_SHAPE.sub(MASK, text)
    text = _PARTIAL_KEY.sub(lambda m: MASK if m.group(0).strip("*") else m.group(0), text)
    for name in {*key_envs, *KEY_ENVS}:
        key = os.environ.get(name) or ""
        if len(key) >= 8:
            text = text.replace(key, MASK)
            text = _WORD.sub(lambda m, k=key: MASK if _shares_piece(m.group(0), k) else m.group(0), text)
    return text


def _shares_piece(word: str, key: str, size: int = 8) -> bool:
    """Whether ``word`` holds ``size`` consecutive characters of ``key`` (a partly echoed key)."""
    if len(word) < size:
        return False
    return any(word[i:i + size] in key for i in range(len(word) - size + 1))


def command_line(argv: Iterable[str] | str) -> str:
    """A command (argument list or string) as it may be recorded: shell-quoted, secrets removed."""
    if isinstance(argv, str):
        return redact_text(argv)
    return shlex.join(redact_text(str(a)) for a in argv)
