"""Config files: load (a TOML file or a shipped preset by name, dotted overrides, errors naming file and key), save,
compare."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..data import atomic_write_text
from .base import ConfigError

__all__ = ["PRESETS", "preset_names", "resolve_config", "load_config", "to_toml", "save_config", "settings_changes",
           "check_same_settings"]


ConfigT = TypeVar("ConfigT", bound=BaseModel)

# Package data, so an installed wheel has them too; the checkout's configs/ links here.
PRESETS = Path(__file__).resolve().parents[1] / "presets"


def preset_names() -> list[str]:
    """The shipped presets' names (`dail run --config NAME`)."""
    return sorted(p.name.removesuffix(".toml") for p in PRESETS.glob("*.toml"))


def resolve_config(path: str | Path) -> Path:
    """`path` when that file exists, else the shipped preset it names (`demo` or `demo.toml`)."""
    given = str(path)
    if Path(given).is_file() or "/" in given or os.sep in given:
        return Path(given)  # a path with a folder is never a preset name: a missing one is reported as missing
    preset = PRESETS / f"{given.removesuffix('.toml')}.toml"
    if preset.is_file():
        return preset
    raise ConfigError(f"{given}: no such config file or preset (presets: {', '.join(preset_names())})")


def _error_lines(err: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for e in err.errors():
        key = prefix + ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        elif e["type"] == "missing":
            lines.append(f"missing required key '{key}'")
        elif not e["loc"]:  # a whole-model check names its keys itself
            lines.append(msg if not prefix else f"[{prefix.rstrip('.')}] {msg}")
        else:
            lines.append(f"key '{key}': {msg}")
    return lines


def _format_error(err: ValidationError, source: str, flags: set[str] = frozenset()) -> str:
    """One line per error, each naming where its key came from: the file, or the flags that overrode it."""
    out = []
    for e, line in zip(err.errors(), _error_lines(err)):
        key = ".".join(str(p) for p in e["loc"])
        out.append(f"{'flags' if key in flags else source}: {line}")
    return "\n".join(out)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a table")
    node[leaf] = value


def load_config(
    cls: type[ConfigT],
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    section: str | None = None,
) -> ConfigT:
    """Build a config from a TOML file or preset name (optionally one `[section]` of it) and dotted-key overrides.

    Overrides whose value is None are ignored, so CLI flags left unset keep the file's values.
    """
    tree: dict[str, Any] = {}
    source = "flags"
    if path is not None:
        path = resolve_config(path)
        source = str(path)
        try:
            tree = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML: {e}") from None
        if section is not None:
            tree = tree.get(section, {})
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return cls.model_validate(tree)
    except ValidationError as e:
        flags = {k for k, v in (overrides or {}).items() if v is not None}
        raise ConfigError(_format_error(e, source, flags)) from None


def to_toml(config: BaseModel) -> str:
    """Serialise a config as TOML (None values are left out: they mean 'default')."""
    return _toml_table(config.model_dump(mode="json"), prefix="")


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # only inside a list (an inline table); a dict value of a key is a [table]
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(key: str) -> str:
    # A bare key where TOML allows one; any other (a file path) quoted.
    return key if key and all(c.isalnum() or c in "_-" for c in key) and key.isascii() else _toml_value(key)


def _toml_table(tree: dict, prefix: str) -> str:
    scalars = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in tree.items() if v is not None and not isinstance(v, dict)]
    out = ("\n".join(scalars) + "\n") if scalars else ""
    for k, v in tree.items():
        if isinstance(v, dict):
            name = f"{prefix}{_toml_key(k)}"
            out += f"\n[{name}]\n" + _toml_table(v, prefix=f"{name}.")
    return out


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config beside an output, atomically."""
    atomic_write_text(path, to_toml(config))


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def settings_changes(saved: str | Path, config: BaseModel, keys: tuple[str, ...] | None = None,
                     ignore: tuple[str, ...] = ()) -> list[str]:
    """`name: old -> new` for every setting where `config` differs from the config saved at `saved`.

    Names are dotted (`sampling.top_p`). Only the fields `keys` names (with what is under them) count
    when given; never those `ignore` names. The saved file is read as `config`'s class, so a field
    added since it was written compares as its default.
    """
    raw = tomllib.loads(Path(saved).read_text(encoding="utf-8"))
    try:
        raw = type(config).model_validate(raw).model_dump(mode="json")
    except ValidationError:
        pass  # written by another version: compare what it says
    old, new = _flat(raw), _flat(config.model_dump(mode="json"))

    def counts(name: str) -> bool:
        def under(names: tuple[str, ...]) -> bool:
            return any(name == n or name.startswith(n + ".") for n in names)

        return (keys is None or under(keys)) and not under(ignore)

    def show(v: Any) -> str:
        return "unset" if v is None else _toml_value(v)

    return [f"{k}: {show(old.get(k))} -> {show(new.get(k))}"
            for k in dict.fromkeys([*old, *new])
            if counts(k) and old.get(k) != new.get(k)]


def check_same_settings(saved: str | Path, config: BaseModel, keys: tuple[str, ...] | None = None, *,
                        ignore: tuple[str, ...] = (), output: str | Path, fresh: str) -> None:
    """Refuse to add to `output`, made under the config saved at `saved`, with other settings of `keys`.

    A resume must not mix rows of two settings: ConfigError lists each differing setting as
    `name: old -> new` and says how to start afresh (`fresh`). No saved config: nothing to compare.
    """
    if not Path(saved).exists():
        return
    changes = settings_changes(saved, config, keys, ignore)
    if changes:
        raise ConfigError(f"{output} was made with other settings ({saved}): {'; '.join(changes)}. "
                          f"A resume would mix the two; {fresh}")
