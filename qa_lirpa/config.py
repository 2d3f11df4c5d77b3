"""Typed configuration from YAML: nested dataclasses, unknown keys are errors, ``key=value`` overrides.

A config class is a (nested) dataclass with defaults. YAML files hold only overrides of those
defaults. Files shipped with the package live in ``qa_lirpa/configs/<name>.yaml`` and are found by
name (``load_config(TrainConfig, "mnist_8bit")``); anything else is a path.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml

from .base.errors import QaLirpaError
from .base.files import atomic_write_text  # noqa: F401 - also importable from here, as before

T = TypeVar("T")
CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(QaLirpaError, ValueError):
    """A bad configuration: the message names the file (if any) and the dotted key."""


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, source=source, prefix=key + ".")
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{source}: bad value for '{key}'")
    if origin is typing.Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(args):
            value = "on" if value else "off"      # YAML 1.1 reads a bare on / off as a boolean
        if value not in args:
            raise ConfigError(f"{source}: '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{source}: '{key}' must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "<config>", prefix: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``; unknown or mistyped keys raise :class:`ConfigError`."""
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        if k not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown key '{prefix}{k}' (known keys: {known})")
        kwargs[k] = _convert(v, hints[k], prefix + k, source)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:                    # the dataclass's own checks (ranges, combinations)
        raise ConfigError(f"{source}: {e}") from e


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (YAML-safe)."""
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(obj))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML ({e})") from None
    return key.strip().split("."), value


def merge_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a nested dict (a copy)."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
        node[keys[-1]] = value
    return out


def resolve_config_path(source: str | os.PathLike) -> Path:
    """A shipped config name (``mnist_8bit``) or a path to a YAML file."""
    p = Path(source)
    if p.suffix in (".yaml", ".yml") or p.exists() or os.sep in str(source):
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        return p
    shipped = CONFIG_DIR / f"{source}.yaml"
    if not shipped.exists():
        names = ", ".join(sorted(x.stem for x in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"no shipped config named '{source}' (shipped: {names}); or give a path")
    return shipped


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_config(cls: type[T], source: str | os.PathLike | None = None,
                overrides: Iterable[str] = ()) -> T:
    """Defaults of ``cls``, then the YAML ``source`` (name or path), then ``key=value`` overrides."""
    data: dict[str, Any] = {}
    label = "<defaults>"
    if source is not None:
        path = resolve_config_path(source)
        data, label = read_yaml(path), str(path)
    overrides = list(overrides)
    if overrides:
        data = merge_overrides(data, overrides)
        label += " + overrides"
    return from_dict(cls, data, source=label)


def save_config(obj: Any, path: str | os.PathLike) -> None:
    """Save a config dataclass as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))
