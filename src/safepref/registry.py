"""One registry helper for what users plug in by name: ``name`` or ``name:argument`` specs, factories imported
only when used, unknown names refused with the known ones and a "did you mean".

    from safepref.registry import Registry
    JUDGES = Registry("judge", {"keyword": make_keyword, "my-judge": "mypackage.judges:make_my_judge"})
    judge = JUDGES.create("my-judge:some-arg", settings)   # make_my_judge("some-arg", settings)
    JUDGES.parse("keywrd")   # ConfigError: unknown judge 'keywrd'. Did you mean 'keyword'? Known: ...

A factory is a callable, or a ``"module:attribute"`` string imported on first use (so torch or transformers load
only for the entry in use). ``create`` calls it with the argument after the first ``:`` (None when there is
none) followed by the caller's arguments. A Registry is a dict, so ``name in registry`` and listing the names
work as before; a test may add an entry with ``monkeypatch.setitem``.

Used by the judges (``safepref.evaluate.judges.JUDGES``), the reward models (``safepref.reward.REWARD_KINDS``),
the generation backends (``safepref.generate.BACKENDS``), the data sources (``safepref.sources.SOURCES``: records,
not factories; ``load`` returns the record) and the audit's probe representations
(``safepref.audit.representations.REPRESENTATIONS``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from safepref.errors import ConfigError, SafeprefError, did_you_mean


@dataclass(frozen=True)
class Spec:
    """A ``name[:argument]`` spec, both parts stripped; ``arg`` is None when absent or empty."""

    name: str
    arg: str | None


def split_spec(spec: str) -> Spec:
    """``"rubric:gpt-4o"`` -> ``Spec("rubric", "gpt-4o")``; ``"keyword"`` -> ``Spec("keyword", None)``. Only the
    first ``:`` splits, so an argument may hold more (``hf:http://host/model``)."""
    name, _, arg = spec.partition(":")
    return Spec(name.strip(), arg.strip() or None)


class Registry(dict[str, Any]):
    """Names -> factories (callables or lazy ``"module:attribute"`` strings), with one way to fail on a name.

    ``kind`` names the things in messages ("judge", "reward model"). ``known`` renders the list of what is known
    for an error (default ``Known: a, b, c``); ``suffix`` is appended to the "did you mean" suggestion (``":…"``
    for kinds that take an argument). ``help`` holds one line per name, for ``describe``. ``error`` is the class of
    the error for an unknown name (ConfigError; DataError for data sources, named in data specs).
    """

    def __init__(self, kind: str, entries: Mapping[str, Any], *, known: Callable[[Registry], str] | None = None,
                 suffix: str = "", help: Mapping[str, str] | None = None,  # noqa: A002 - as in field()
                 error: type[SafeprefError] = ConfigError) -> None:
        super().__init__(entries)
        self.kind = kind
        self.suffix = suffix
        self.help = dict(help or {})
        self.error = error
        self._known = known or (lambda registry: f"Known: {', '.join(registry)}")

    def unknown(self, spec: str, name: str | None = None) -> SafeprefError:
        """The error for a spec whose name is not registered (``name`` defaults to the spec's)."""
        name = split_spec(spec).name if name is None else name
        hint = did_you_mean(name, list(self), suffix=self.suffix)
        return self.error(f"unknown {self.kind} '{spec}'.{hint} {self._known(self)}")

    def parse(self, spec: str) -> Spec:
        """The spec's name and argument; ConfigError (with the known names) when the name is not registered."""
        parsed = split_spec(spec)
        if parsed.name not in self:
            raise self.unknown(spec, parsed.name)
        return parsed

    def load(self, name: str) -> Callable[..., Any]:
        """The factory of ``name``, importing its module first when it is given as ``"module:attribute"``.

        Raises SafeprefError when that module needs a package that is not installed.
        """
        if name not in self:
            raise self.unknown(name)
        factory = self[name]
        if not isinstance(factory, str):
            return factory
        module_name, _, attribute = factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise SafeprefError(f"{self.kind} '{name}' needs a package that is not installed: {exc.name}") from None
        return getattr(module, attribute)

    def create(self, spec: str, *args: Any, **kwargs: Any) -> Any:
        """``factory(argument, *args, **kwargs)`` for the spec's name (see ``parse`` and ``load``)."""
        parsed = self.parse(spec)
        return self.load(parsed.name)(parsed.arg, *args, **kwargs)

    def describe(self) -> str:
        """One indented line per entry: its help line, or its name."""
        return "\n".join(f"  {self.help.get(name, name)}" for name in self)
