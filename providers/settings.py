"""Settings declared once: a frozen dataclass per settings table, one field per key.

Every table a user can write (``[run]``, ``[spec]``, ``[scenario]``, ``[workloads.<name>]``,
``[providers.<id>]``) is a frozen dataclass whose fields are declared with :func:`setting`:
name, type (the annotation), default, help, unit, range or choices, and the command-line flag
if there is one. Parsing a TOML table or a flag's text, validating it, describing it in
``--help`` and writing it to the manifest all derive from that one declaration, so a key is
never written in four places (pyperf's ``_metadata.py`` METADATA table is the model).

It lives in ``providers`` because adapters declare their settings with it and ``providers``
never imports ``bench``; ``bench`` uses it for everything else.

Types understood (from the annotation): ``bool``, ``int``, ``float``, ``str``, ``Path``,
``tuple[str, ...]``, ``tuple[int, ...]``, ``tuple[float, ...]``, a ``StrEnum``, and any of
these ``| None``. Values from TOML must already have the type (an int is accepted where a
float is wanted; nothing else is converted); values from flags are text and are converted.
Every refusal is a :class:`SettingError` with one line that names the key.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_META = "sandbox_bench_setting"


class SettingError(ValueError):
    """A setting's value is refused; the message is one line meant for the user."""


@dataclass(frozen=True, kw_only=True)
class SettingInfo:
    """What :func:`setting` declared about one field (kept in the field's metadata)."""

    help: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    #: For ``str`` and tuple-of-str fields: the only values allowed.
    choices: tuple[str, ...] | None = None
    #: The command-line flag (``--iterations``), or None when the key is TOML-only.
    flag: str | None = None
    #: An example value shown in help texts.
    example: str = ""
    #: Do not write this value to manifests (e.g. a local path that is not a secret but is
    #: meaningless elsewhere). Secrets never go in settings at all: they come from env vars.
    private: bool = False


def setting(
    default: Any = MISSING,
    *,
    help: str,
    unit: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Sequence[str] | None = None,
    flag: str | None = None,
    example: str = "",
    private: bool = False,
    default_factory: Any = MISSING,
) -> Any:
    """Declare one settings key as a dataclass field (use as ``name: int = setting(...)``)."""
    info = SettingInfo(
        help=help,
        unit=unit,
        minimum=minimum,
        maximum=maximum,
        choices=tuple(choices) if choices is not None else None,
        flag=flag,
        example=example,
        private=private,
    )
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={_META: info})
    return dataclasses.field(default=default, metadata={_META: info})


@dataclass(frozen=True, kw_only=True)
class Declared:
    """One declared key of a settings class, with its resolved type."""

    name: str
    kind: Any
    optional: bool
    default: Any
    info: SettingInfo

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def describe(self) -> str:
        """One line for ``--help`` and docs: help, unit, range or choices, default."""
        parts = [self.info.help.rstrip(".")]
        if self.info.choices:
            parts.append("one of " + ", ".join(self.info.choices))
        if self.info.minimum is not None or self.info.maximum is not None:
            low = "" if self.info.minimum is None else f"{self.info.minimum:g}"
            high = "" if self.info.maximum is None else f"{self.info.maximum:g}"
            parts.append(f"range {low}..{high}" + (f" {self.info.unit}" if self.info.unit else ""))
        elif self.info.unit:
            parts.append(f"in {self.info.unit}")
        if not self.required and self.default is not None and self.default != ():
            parts.append(f"default {format_value(self.default)}")
        return "; ".join(parts)


def format_value(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def declared(cls: type) -> list[Declared]:
    """Every key ``cls`` declares with :func:`setting`, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        info = f.metadata.get(_META)
        if info is None:
            continue
        kind, optional = _unwrap_optional(hints[f.name])
        out.append(
            Declared(name=f.name, kind=kind, optional=optional, default=_default_of(f), info=info)
        )
    return out


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _number(value: Any, key: str, kind: type, from_text: bool) -> int | float:
    if from_text and isinstance(value, str):
        text = value.strip()
        try:
            value = int(text, 10) if kind is int else float(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise SettingError(f"{key} must be {what}, got {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        what = "a whole number" if kind is int else "a number"
        raise SettingError(f"{key} must be {what}, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise SettingError(f"{key} must be a whole number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingError(f"{key} must be a finite number, got {value!r}")
    return float(value) if kind is float else value


def _check_range(value: float, key: str, info: SettingInfo) -> None:
    unit = f" {info.unit}" if info.unit else ""
    if info.minimum is not None and value < info.minimum:
        raise SettingError(f"{key} must be at least {info.minimum:g}{unit}, got {value:g}")
    if info.maximum is not None and value > info.maximum:
        raise SettingError(f"{key} must be at most {info.maximum:g}{unit}, got {value:g}")


def _scalar(value: Any, kind: Any, key: str, info: SettingInfo, from_text: bool) -> Any:
    if kind is bool:
        if from_text and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
        if not isinstance(value, bool):
            raise SettingError(f"{key} must be true or false, got {value!r}")
        return value
    if kind in (int, float):
        number = _number(value, key, kind, from_text)
        _check_range(number, key, info)
        return number
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        choices = [str(m.value) for m in kind]
        if not isinstance(value, str) or value not in choices:
            raise SettingError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        return kind(value)
    if kind in (str, Path):
        if not isinstance(value, str):
            raise SettingError(f"{key} must be a string, got {value!r}")
        if "\x00" in value:
            raise SettingError(f"{key} must not contain a NUL character")
        if info.choices is not None and value not in info.choices:
            raise SettingError(f"{key} must be one of {', '.join(info.choices)}, got {value!r}")
        return Path(value) if kind is Path else value
    raise TypeError(f"setting {key}: unsupported type {kind!r}")  # a declaration bug


def parse_value(decl: Declared, value: Any, *, where: str = "", from_text: bool = False) -> Any:
    """``value`` converted to ``decl``'s type and checked; SettingError otherwise."""
    key = f"{where}.{decl.name}" if where else decl.name
    if value is None:
        if decl.optional:
            return None
        raise SettingError(f"{key} must be set")
    if typing.get_origin(decl.kind) is tuple:
        (item_kind, *_rest) = typing.get_args(decl.kind)
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise SettingError(f"{key} must be a list, got {value!r}")
        items = tuple(
            _scalar(v, item_kind, f"{key}[{i}]", decl.info, from_text) for i, v in enumerate(value)
        )
        if item_kind is str and len(set(items)) != len(items):
            raise SettingError(f"{key} lists a value twice: {', '.join(items)}")
        return items
    return _scalar(value, decl.kind, key, decl.info, from_text)


def parse(
    cls: type[T],
    table: Any,
    *,
    where: str,
    from_text: bool = False,
    base: T | None = None,
) -> T:
    """An instance of the settings class ``cls`` from a TOML table (or flags' text).

    Unknown keys are refused, every value is checked by its declaration, missing keys take
    their default (or the value in ``base``). ``__post_init__`` of ``cls`` may add checks
    across keys; its ValueError becomes a SettingError naming ``where``.
    """
    if not isinstance(table, Mapping):
        raise SettingError(f"[{where}] must be a table, got {type(table).__name__}")
    decls = {d.name: d for d in declared(cls)}
    unknown = sorted(str(k) for k in table if k not in decls)
    if unknown:
        known = ", ".join(decls) or "none"
        raise SettingError(f"[{where}]: unknown key(s) {', '.join(unknown)} (known: {known})")
    values: dict[str, Any] = {}
    for name, decl in decls.items():
        if name in table:
            values[name] = parse_value(decl, table[name], where=where, from_text=from_text)
        elif base is not None:
            values[name] = getattr(base, name)
        elif decl.required:
            raise SettingError(f"[{where}] {name} must be set")
    try:
        return cls(**values)
    except SettingError:
        raise
    except (TypeError, ValueError) as exc:
        raise SettingError(f"[{where}]: {exc}") from None


def to_table(obj: Any, *, include_private: bool = False) -> dict[str, Any]:
    """The declared keys of a settings instance as TOML/JSON-ready values (for manifests)."""
    out: dict[str, Any] = {}
    for decl in declared(type(obj)):
        if decl.info.private and not include_private:
            continue
        value = getattr(obj, decl.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = [v.value if isinstance(v, enum.Enum) else v for v in value]
        out[decl.name] = value
    return out


__all__ = [
    "Declared",
    "SettingError",
    "SettingInfo",
    "declared",
    "format_value",
    "parse",
    "parse_value",
    "setting",
    "to_table",
]
