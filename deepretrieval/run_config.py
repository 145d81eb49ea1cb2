"""Experiment configs: a TOML file + dotted command-line overrides -> one validated, frozen RunConfig.

    from deepretrieval.run_config import load_config, write_resolved
    cfg = load_config("configs/scifact_bm25.toml", ["rl.actor_optim.lr=2e-6", "task.limit=64"])
    cfg.model.name, cfg.task.family, cfg.rl.total_steps, cfg.run.out_dir
    write_resolved(cfg, "runs/scifact")       # runs/scifact/config.json: every value, defaults included

A config may start with `extends = "other.toml"` (a path relative to it): the other file is read
first and this one's values replace its values key by key, so the experiments share one base
with the paper's hyper-parameters instead of copies of it. A config has five tables: [model]
(ModelSection), [task] (tasks.registry.TaskConfig, with [task.engine]), [rl] (rl.config.RLConfig,
with [rl.sampling], [rl.actor_optim], [rl.critic_optim], [rl.lora]), [sft] (rl.config.SFTConfig,
with [sft.optim], [sft.lora]; read by `deepretrieval sft`) and [run] (RunSection). Anything left
out takes the dataclass default. An override is `dotted.key=value`; the value is read as a TOML
value (`1e-6`, `true`, `"text"`, `[1, 2]`), a bare word that is not TOML is taken as a string
(`task.engine.kind=dense`), and `none` / `null` set an optional value to None. Every key is
checked against the dataclasses and every value against the field's type, so a typo fails at
start-up with a message naming the dotted key, e.g.
    config error: unknown key 'rl.actor_optim.lrr' (known: betas, eps, grad_clip, lr, ...)
    config error: rl.total_steps = 'ten': expected int
Values are then checked by the dataclasses' own rules (e.g. GRPO needs group_size >= 2). The
resolved config is written as JSON: TOML has no null, and a run must record None values exactly;
`load_config` reads that file back (`.json`) to the same RunConfig.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepretrieval.rl.config import RLConfig, SFTConfig
from deepretrieval.tasks.registry import TaskConfig


class ConfigError(ValueError):
    """A config the user can fix: the message names the dotted key."""


@dataclass(frozen=True)
class ModelSection:
    """The [model] table: which model a run loads and how it prompts it. (The architecture is
    model.config.ModelConfig, read from the weights' own config.json.)"""
    name: str = "smollm2-135m"          # a built-in name (model.registry), a local HF folder or a hub id
    chat_template: str = "auto"         # auto = the model's own; or chatml | smollm2 | qwen3
    max_prompt_tokens: int = 1024       # longer prompts are an error, never silently cut
    device: str = "auto"                # auto = cuda when present, else cpu


@dataclass(frozen=True)
class RunSection:
    out_dir: str = "runs/default"
    eval_split: str = "test"
    eval_every: int = 0                 # RL steps between evaluations (0 = only before and after)
    eval_limit: int = 0                 # evaluate on the first N examples (0 = all)
    eval_max_new_tokens: int = 512
    eval_greedy: bool = True
    eval_batch_size: int = 16           # prompts per generation batch in evaluations


@dataclass(frozen=True)
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    task: TaskConfig = field(default_factory=lambda: TaskConfig(data="."))
    rl: RLConfig = field(default_factory=RLConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- typed construction ---------------------------------------------------------------------
def _type_ok(value, tp) -> tuple[bool, Any]:
    """(fits, converted value) for a value read from TOML / JSON against a field's type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, conv = _type_ok(value, arg)
            if ok:
                return True, conv
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is Any:
        return True, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        item_types = args if not (len(args) == 2 and args[1] is Ellipsis) else (args[0],) * len(value)
        if len(item_types) != len(value):
            return False, value
        conv = [_type_ok(v, t) for v, t in zip(value, item_types)]
        return all(ok for ok, _ in conv), tuple(c for _, c in conv)
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        conv = {k: _type_ok(v, args[1]) for k, v in value.items()}
        return all(isinstance(k, str) for k in value) and all(ok for ok, _ in conv.values()), \
            {k: c for k, (_, c) in conv.items()}
    return False, value


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"unknown key {dotted!r} (known: {', '.join(sorted(fields))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, dotted)
            continue
        ok, conv = _type_ok(value, tp)
        if not ok:
            raise ConfigError(f"{dotted} = {value!r}: expected {_type_name(tp)}")
        kwargs[key] = conv
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[{where or 'config'}] {exc}") from exc


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) if typing.get_origin(tp) is None else str(tp).replace("typing.", "")


# ---- overrides ------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[list[str], Any]:
    """'rl.actor_optim.lr=1e-6' -> (['rl', 'actor_optim', 'lr'], 1e-06)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} is not KEY=VALUE with a dotted KEY (e.g. rl.total_steps=10)")
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return key.split("."), None
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = json.loads(json.dumps(data))         # a deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[:i + 1])} is a value, not a table")
            node = child
        node[path[-1]] = value
    return data


def config_from_dict(data: dict, overrides: list[str] = ()) -> RunConfig:
    return _build(RunConfig, apply_overrides(data, list(overrides)), "")


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_data(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The plain data of a TOML / JSON config with its `extends` chain merged in."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (the experiments are in configs/)")
    if path in _seen:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends must be a file name, got {base!r}")
    return _merge(read_config_data(path.parent / base, _seen + (path,)), data)


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a TOML (or a resolved .json) config, apply overrides, validate."""
    return config_from_dict(read_config_data(path), overrides)


def write_resolved(cfg: RunConfig, out_dir: str | Path, name: str = "config.json") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    return path
