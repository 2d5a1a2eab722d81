"""Typed configs: dataclasses loaded from YAML plus ``key=value`` overrides, validated with errors that name
the field.

Each stage defines its own small dataclass (one per concern). Every field carries
``metadata={"help": ...}`` so the command line can explain it. Nested dataclasses are supported and addressed
with dots in overrides (``generation.temperature=0.7``). Validation beyond types lives in each dataclass's
``__post_init__``, which should raise ``ConfigError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from safepref.errors import ConfigError, did_you_mean

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING,
          metavar: str | None = None, choices: Any = None, flag: str | None = None, option: bool = True,
          parse: Any = None) -> Any:
    """A dataclass field with help text (shown by ``--help`` and in config docs) and, for a command-line
    option made from it (``add_arguments_from``), the placeholder its help shows, the values it accepts and
    its flag when not ``--<field-name>`` (a switch that turns a setting off: ``--no-margin``), ``parse`` the
    function that reads its text when the type does not say (``3`` or ``0.5``); ``option=False``: no option (a
    nested config the command builds from options of its own)."""
    metadata = {"help": help, **({"metavar": metavar} if metavar else {}),
                **({"choices": list(choices)} if choices is not None else {}), **({"flag": flag} if flag else {}),
                **({} if option else {"option": False}), **({"parse": parse} if parse else {})}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply to read") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of field: value")
    _check_acyclic(data, str(path), set())
    return data


def _check_acyclic(node: Any, where: str, parents: set[int]) -> None:
    """ConfigError for a YAML alias that contains itself (``a: &x [*x]``): it would recurse forever."""
    if not isinstance(node, dict | list):
        return
    if id(node) in parents:
        raise ConfigError(f"{where}: a YAML alias refers to itself (alias cycle)")
    parents = parents | {id(node)}
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        _check_acyclic(value, f"{where}: {key}" if ": " not in where else f"{where}.{key}", parents)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``; values are parsed as YAML scalars."""
    result: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like field=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return result


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking names and types; errors name ``where.field``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            hint = did_you_mean(key, list(fields), parenthetical=True)
            raise ConfigError(f"unknown config field '{name}'{hint}; known: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, name)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config field '{name}': invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        return from_dict(tp, value, name)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config field '{name}' must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config field '{name}' must be a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{name}' must be a mapping, got {value!r}")
        inner = args[1] if len(args) == 2 else Any
        return {k: _coerce(inner, v, f"{name}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config field '{name}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config field '{name}' must be an integer, got {value!r}")
    if tp is float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads "5e-7" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"config field '{name}' must be a number, got {value!r}")
        # inf/nan pass every `> 0` check yet give random tokens or NaN losses: refuse them here, for all.
        if not math.isfinite(number):
            raise ConfigError(f"config field '{name}' must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config field '{name}' must be a string, got {value!r}")
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> T:
    """Defaults of ``cls`` <- ``base`` <- YAML file <- ``key=value`` overrides."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = deep_merge(data, load_yaml(path))
    if overrides:
        data = deep_merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_hash(*parts: Any) -> str:
    """Short stable hash of configs / plain values, used to key caches and output folders."""
    payload = json.dumps(
        [dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts],  # type: ignore[arg-type]
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def finite_float(text: str) -> float:
    """argparse ``type=`` for a float option: refuses inf and nan (``--timeout inf`` would never end)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def require_finite(config: Any) -> None:
    """ConfigError naming the first float field of dataclass ``config`` that holds inf or nan (for configs
    built in Python, which skip the parsing checks)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config field '{f.name}' must be a finite number, got {value!r}")


def require(condition: bool, field_name: str, message: str) -> None:
    """Raise ConfigError naming the field unless ``condition`` holds (for use in ``__post_init__``)."""
    if not condition:
        raise ConfigError(f"config field '{field_name}': {message}")


def check_keys(cls: type, data: dict[str, Any], where: str) -> None:
    """ConfigError naming ``where.key`` for a key of ``data`` (``a.b`` dotted or nested) that is no field of
    dataclass ``cls``; nested dataclass fields are checked the same way. Values are left to ``from_dict``."""
    if not isinstance(data, dict):
        raise ConfigError(f"config field '{where}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        head, _, rest = str(key).partition(".")
        if head not in fields:
            hint = did_you_mean(head, list(fields), parenthetical=True)
            raise ConfigError(f"unknown config field '{where}.{head}'{hint}; known: {', '.join(sorted(fields))}")
        inner = next((t for t in (hints[head], *typing.get_args(hints[head])) if dataclasses.is_dataclass(t)), None)
        if inner is not None and (rest or isinstance(value, dict)):
            check_keys(inner, {rest: value} if rest else value, f"{where}.{head}")


def add_arguments_from(parser: Any, cls: type, positional: tuple[str, ...] = (), dest_prefix: str = "") -> None:
    """One command-line option per field of dataclass ``cls`` (``--max-per-prompt`` for ``max_per_prompt``), its
    help from the field, so a setting is defined once: fields without a default are required, ``positional``
    ones are arguments, bools are switches, lists repeat, ints and floats are parsed as such. ``dest_prefix``
    keeps the parsed names of a second config apart (``judge_device`` beside ``device``)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.metadata.get("option", True):
            continue
        options: dict[str, Any] = {"help": f.metadata.get("help", "")}
        if f.name in positional:
            parser.add_argument(f.name, **options)
            continue
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # `X | None`: an option of type X
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        options["dest"] = dest_prefix + f.name
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if kind is bool:
            parser.add_argument(flag, action="store_true", **options)
            continue
        for key in ("metavar", "choices"):
            if key in f.metadata:
                options[key] = f.metadata[key]
        if "metavar" not in options and "choices" not in options:  # named after the flag, not the field
            options["metavar"] = flag.lstrip("-").replace("-", "_").upper()
        if typing.get_origin(kind) is list:
            options["action"] = "append"
        elif "parse" in f.metadata:
            options["type"] = f.metadata["parse"]
        elif kind in (int, float):
            options["type"] = int if kind is int else finite_float
        parser.add_argument(flag, **options)


def from_arguments(cls: type[T], args: Any, dest_prefix: str = "", **given: Any) -> T:
    """Dataclass ``cls`` from a parsed command line whose options ``add_arguments_from`` made (other
    attributes of ``args``, such as a command's own launcher options, are left out), plus the fields that are
    no option (``given``)."""
    fields = [f for f in dataclasses.fields(cls) if f.init and f.metadata.get("option", True)]  # type: ignore[arg-type]
    return cls(**{f.name: getattr(args, dest_prefix + f.name) for f in fields}, **given)


def help_text(cls: type) -> str:
    """One line per field: name, default and help; used by ``--help`` epilogs."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        lines.append(f"  {f.name} = {default!r}: {f.metadata.get('help', '')}")
    return "\n".join(lines)
