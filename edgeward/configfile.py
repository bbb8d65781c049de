"""Typed, frozen configuration trees loaded from YAML and flags.

A daemon describes its configuration as frozen dataclasses whose fields are
made with :func:`setting` (a default plus the sentence that documents it).
:func:`build` checks a plain mapping against that tree and reports every
problem at once; :func:`render_defaults` prints the tree as a commented
YAML file, which is what ``--print-default-config`` shows.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from edgeward.errors import ConfigError

T = TypeVar("T")

Check = Callable[[Any], str | None]


def setting(default: Any, doc: str, check: Check | None = None) -> Any:
    """A config field: its default, one sentence of documentation, an optional check.

    ``check`` returns a problem ("must be positive") or None.
    """
    meta = {"doc": doc, "check": check}
    if isinstance(default, list | dict):
        raise TypeError("use a tuple for list defaults: configs are frozen")
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def port_number(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number (0 to 65535; 0 picks a free one)"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file; ConfigError with a one-line reason otherwise."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read config {path}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"config {path}{where} is not valid YAML"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config {path} must be a mapping of settings"])
    return data


def build(cls: type[T], data: dict[str, Any]) -> T:
    """An instance of the config tree ``cls`` from ``data``; ConfigError lists every problem."""
    problems: list[str] = []
    result = _build(cls, data, "", problems)
    if problems:
        raise ConfigError(problems)
    return result


def _build(cls: type[T], data: Any, where: str, problems: list[str]) -> T:
    if not isinstance(data, dict):
        problems.append(f"{where.rstrip('.') or 'config'}: must be a mapping")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            near = [n for n in fields if n.replace("_", "") == str(key).replace("_", "").lower()]
            hint = f' (did you mean "{near[0]}"?)' if near else ""
            problems.append(f"{where}{key}: unknown setting{hint}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        path = f"{where}{name}"
        value = _coerce(hints[name], data[name], path, problems)
        if value is _BAD:
            continue
        check = f.metadata.get("check")
        if check is not None and (problem := check(value)) is not None:
            problems.append(f"{path}: {problem}")
            continue
        values[name] = value
    result = cls(**values)
    # a tree may check relations between its fields in a problems() method
    relations = getattr(result, "problems", None)
    if callable(relations) and not problems:
        problems.extend(f"{where}{p}" for p in relations())
    return result


_BAD = object()


def _coerce(hint: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, path, problems)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{path}.", problems)  # type: ignore[arg-type]
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            problems.append(f"{path}: must be a list")
            return _BAD
        item = typing.get_args(hint)[0]
        items = [_coerce(item, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return _BAD if any(i is _BAD for i in items) else tuple(items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{path}: must be true or false")
        return _BAD
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{path}: must be a whole number")
        return _BAD
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        problems.append(f"{path}: must be a number")
        return _BAD
    if hint is str:
        if isinstance(value, str):
            return value
        problems.append(f"{path}: must be a string")
        return _BAD
    raise TypeError(f"unsupported config type {hint!r} at {path}")


def render_defaults(cls: type, title: str) -> str:
    """The config tree with its defaults as a commented YAML document."""
    lines = [
        f"# {title}",
        "# Every setting is shown with its default; delete what you do not change.",
        "",
    ]
    _render(cls(), lines, "")
    return "\n".join(lines) + "\n"


def _render(instance: Any, lines: list[str], indent: str) -> None:
    import yaml

    for f in dataclasses.fields(instance):
        doc = f.metadata.get("doc", "")
        if doc:
            lines.append(f"{indent}# {doc}")
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}:")
            _render(value, lines, indent + "  ")
        else:
            if isinstance(value, tuple):
                value = list(value)
            dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, width=1000).strip()
            # safe_dump wraps a flow mapping in braces; we want a plain "key: value" line
            lines.append(f"{indent}{dumped[1:-1]}")
        lines.append("")


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it, section by section (flags over the file)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def add_flags(parser: Any, cls: type, names: tuple[str, ...]) -> None:
    """Add ``--some-setting`` flags for the named top-level settings of ``cls``.

    Flags default to None so that only the flags a user gave override the file.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        hint = hints[name]
        default = fields[name].default
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=hint if hint in (int, float, str) else str,
            default=None,
            metavar=name.upper(),
            # argparse formats help with %: a literal one (say "5%") must be doubled
            help=f"{fields[name].metadata['doc']} (default: {default!r})".replace("%", "%%"),
        )


def flag_values(args: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The settings among ``names`` that were given as flags."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
