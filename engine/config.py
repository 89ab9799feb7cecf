"""Typed configs: dataclasses filled from YAML, with `base:` inheritance and dotted `--set` overrides.

Strict by design (nanoGPT's strictness without its `exec`): an unknown key, a value of the wrong type, a missing
required value or a missing required file fails before any work starts, with one line naming the dotted key.

Path fields are declared with ``path_field(kind="file"|"dir", required=...)``; `validate_paths` checks them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem, reported in one line that names the dotted key."""


def path_field(default: str | None = None, kind: str = "file", required: bool = False):
    """A config field holding a filesystem path.

    kind: "file" or "dir". required: the path must be set. Whenever it is set it must exist (checked by
    `validate_paths`, before any work starts).
    """
    return dataclasses.field(default=default, metadata={"path": kind, "required": required})


# ----------------------------------------------------------------------------------------------------------- YAML
def load_yaml(path: str | os.PathLike, _seen: tuple[str, ...] = ()) -> dict:
    """Read a YAML file and resolve its `base:` chain (paths relative to the file). Later files override.

    A nested mapping may name YAML files to extend too, e.g. a dataset entry ``{base: ../base/ffhq.yaml, split:
    test}``: a `base:` below the top level counts only when its value is a ``.yaml`` path (or a list of them), so a
    dict entry that happens to be called "base" (an ablation's name) is left alone.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    key = str(path.resolve())
    if key in _seen:
        raise ConfigError(f"circular 'base:' chain at {path}")
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    data = {k: _resolve_nested_bases(v, path, _seen + (key,)) for k, v in data.items()}
    if base is None:
        return data
    return deep_merge(_load_bases(base, path, _seen + (key,)), data)


def _load_bases(base, path: Path, seen: tuple[str, ...]) -> dict:
    """The merged content of the YAML file(s) ``base`` names, relative to ``path``'s folder."""
    merged: dict = {}
    for b in base if isinstance(base, list) else [base]:
        merged = deep_merge(merged, load_yaml(path.parent / b, seen))
    return merged


def _names_yaml(value) -> bool:
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(isinstance(v, str) and v.endswith((".yaml", ".yml")) for v in values)


def _resolve_nested_bases(value, path: Path, seen: tuple[str, ...]):
    """``value`` with every nested mapping's `base: FILE.yaml` merged in (the mapping's own keys win)."""
    if isinstance(value, list):
        return [_resolve_nested_bases(v, path, seen) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _resolve_nested_bases(v, path, seen) for k, v in value.items() if k != "base" or not _names_yaml(v)}
    if _names_yaml(value.get("base")):
        return deep_merge(_load_bases(value["base"], path, seen), out)
    return out


def _yaml_error(e: yaml.YAMLError, where: str) -> ConfigError:
    """One line for a YAML syntax error: file, line and column (1-based), and the problem."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return ConfigError(f"{where}{at}: YAML syntax error: {problem}")


def _read_yaml(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise _yaml_error(e, str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config: {getattr(e, 'strerror', None) or e}") from None


def deep_merge(a: dict, b: dict) -> dict:
    """Recursive dict merge: values of `b` win; nested mappings merge key by key."""
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_KEY_PART = re.compile(r"^([^.\[\]]+)((?:\[-?\d+\])*)$")


def _split_key(key: str, text: str) -> list[str | int]:
    """'data.train[0].root' -> ['data', 'train', 0, 'root']."""
    keys: list[str | int] = []
    for part in key.split("."):
        m = _KEY_PART.match(part.strip())
        if not m:
            raise ConfigError(f"--set {text}: cannot read key part {part!r} (expected name or name[index], e.g. "
                              "data.train[0].root)")
        keys.append(m.group(1))
        keys += [int(i) for i in re.findall(r"\[(-?\d+)\]", m.group(2))]
    return keys


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """'a.b.c=value' -> (['a','b','c'], parsed YAML value); 'a.b[1].c=value' -> (['a','b',1,'c'], value)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise _yaml_error(e, f"--set {text}") from None
    return _split_key(key, text), value


def _key_text(keys: list[str | int]) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Dotted overrides onto the YAML's data (copied, never mutated); `name[i]` reaches item i of a list that the
    YAML (or an earlier override) holds, e.g. data.train[0].root=/data/ffhq256."""
    data = dict(data)
    for text in overrides or []:
        keys, value = parse_override(text)
        node: Any = data
        for depth, k in enumerate(keys):
            here = _key_text(keys[:depth])
            if isinstance(k, int):
                if not isinstance(node, list):
                    raise ConfigError(f"--set {text}: {here} is not a list in this config, so [{k}] has nothing "
                                      f"to index (set the whole list: --set {here}=[...])")
                if not -len(node) <= k < len(node):
                    valid = f"0..{len(node) - 1}" if node else "none: the list is empty"
                    raise ConfigError(f"--set {text}: index {k} out of range: {here} has {len(node)} item"
                                      f"{'s' if len(node) != 1 else ''} (valid: {valid})")
            elif not isinstance(node, dict):
                raise ConfigError(f"--set {text}: {here} is a {type(node).__name__}, not a section with keys")
            if depth == len(keys) - 1:
                node[k] = value
                break
            nxt = node[k] if isinstance(k, int) else node.get(k)
            if isinstance(nxt, dict):
                nxt = dict(nxt)
            elif isinstance(nxt, list):
                nxt = list(nxt)
            elif not isinstance(keys[depth + 1], int):
                nxt = {}
            node[k] = nxt
            node = nxt
    return data


# ------------------------------------------------------------------------------------------------ dataclass build
def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert `value` to the annotated type `tp`; raise ConfigError naming `key` otherwise."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tagged = _tagged_arms(args)
        if tagged:
            return _convert_tagged(value, tagged, key)
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        conv = [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(conv) if origin is tuple else conv
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        args = typing.get_args(tp)
        inner = args[1] if len(args) == 2 else Any
        return {k: _convert(v, inner, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build_dataclass(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected bool, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected int, got bool {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected float, got bool {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e-4' as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected str, got {type(value).__name__} {value!r}")
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _tagged_arms(args: tuple) -> dict[str, type] | None:
    """{kind value: dataclass} when every arm of a union (None aside) is a dataclass with a ``kind: Literal[...]``
    field (a tagged union, e.g. data.config.FaceDataConfig); None otherwise."""
    arms = [a for a in args if a is not type(None)]
    tags: dict[str, type] = {}
    for a in arms:
        hint = typing.get_type_hints(a).get("kind") if dataclasses.is_dataclass(a) else None
        if typing.get_origin(hint) is not typing.Literal:
            return None
        tags.update({v: a for v in typing.get_args(hint)})
    return tags


def _convert_tagged(value: Any, tagged: dict[str, type], key: str) -> Any:
    """A mapping -> the dataclass its ``kind`` names (an instance of one of them passes as it is)."""
    if any(isinstance(value, cls) for cls in tagged.values()):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping with a 'kind' ({', '.join(tagged)}), got {value!r}")
    kind = value.get("kind")
    if kind not in tagged:
        what = "missing" if kind is None else f"unknown kind {kind!r}"
        raise ConfigError(f"{key}.kind: {what}; valid: {', '.join(tagged)}")
    return build_dataclass(tagged[kind], value, key)


def convert_value(value: Any, tp: Any, key: str) -> Any:
    """Check / convert one value against a type annotation as a config field of that type is (ConfigError naming
    ``key`` otherwise); e.g. a plain mapping into a tagged union of dataclasses."""
    return _convert(value, tp, key)


def build_dataclass(cls: type[T], data: dict, prefix: str = "") -> T:
    """Fill dataclass `cls` from a plain mapping; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            where = f" under '{prefix}'" if prefix else ""
            name = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"unknown config key '{name}' (valid keys{where}: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key '{key}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ checks
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from None


def to_dict(cfg: Any) -> Any:
    """Dataclass tree -> plain YAML-able structure."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


# Sections whose change makes a run's checkpoints unusable (or a different experiment): compared on resume.
RESUME_FIXED = ("model", "morphable", "data.image_size")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {dotted key: leaf value} (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def resume_conflicts(saved: dict, current: dict, fixed: tuple[str, ...] = RESUME_FIXED) -> list[str]:
    """'key: saved -> current' for every key under `fixed` that differs between a run's saved config.yaml and the
    config it is being resumed with (`train.*`, e.g. a longer `train.steps`, may change)."""
    old, new = flatten(saved), flatten(current)

    def under(key: str) -> bool:
        return any(key == f or key.startswith(f + ".") for f in fixed)

    keys = sorted(k for k in set(old) | set(new) if under(k) and old.get(k, "<unset>") != new.get(k, "<unset>"))
    return [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys]


def iter_path_fields(cfg: Any, prefix: str = ""):
    """Yield (dotted key, value, kind, required) for every path field in a dataclass tree."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if "path" in f.metadata:
            yield key, value, f.metadata["path"], f.metadata.get("required", False)
        elif dataclasses.is_dataclass(value):
            yield from iter_path_fields(value, key)
        elif isinstance(value, list | tuple):  # e.g. a list of dataset sections
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    yield from iter_path_fields(item, f"{key}[{i}]")


def validate_paths(cfg: Any) -> None:
    """Every set path must exist; every required one must be set. One line naming the key otherwise."""
    for key, value, kind, required in iter_path_fields(cfg):
        if value in (None, ""):
            if required:
                raise ConfigError(f"{key}: a path is required here (set it in the YAML or with --set {key}=...)")
            continue
        p = Path(os.path.expanduser(str(value)))
        ok = p.is_dir() if kind == "dir" else p.is_file()
        if not ok:
            raise ConfigError(f"{key}: {kind} not found: {value}")


def load_config(cls: type[T], path: str | os.PathLike | None, overrides: list[str] | None = None) -> T:
    """YAML file (with `base:` chain) + dotted overrides -> validated dataclass instance."""
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    return build_dataclass(cls, data)


# ---------------------------------------------------------------------------------------------------------- CLI
def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, help="YAML config (may name a `base:` YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=100 (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--run-dir", default=None, help="output directory (default runs/<config name>)")
    return parser


def default_run_dir(config_path: str) -> str:
    p = Path(config_path)
    return str(Path("runs") / (f"{p.parent.name}_{p.stem}" if p.parent.name else p.stem))


def cli_config(cls: type[T], argv: list[str] | None = None, description: str = "",
               extra_args=None, training: bool = False) -> tuple[T, argparse.Namespace]:
    """Parse the common entry-script arguments and return (config, args).

    Config errors print one line `config error: ...` and exit with status 2, before any work starts.
    `--dry-run` prints the resolved config and exits 0. training: also `--restart` (args.restart).
    """
    parser = add_common_args(argparse.ArgumentParser(description=description))
    if training:
        parser.add_argument("--restart", action="store_true",
                            help="start the run over from step 0, ignoring its checkpoints and config.yaml: the "
                                 "checkpoints are moved to RUN/checkpoints/restarted_<n>/, the logs (metrics.jsonl, "
                                 "log.jsonl, tb/) to RUN/restarted_<n>/; nothing is deleted")
    if extra_args:
        extra_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(cls, args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.dry_run:  # print even when files are missing, then say what is missing
        print(dump_yaml(cfg), end="")
    try:
        validate_paths(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.dry_run:
        raise SystemExit(0)
    args.run_dir = args.run_dir or default_run_dir(args.config)
    return cfg, args
