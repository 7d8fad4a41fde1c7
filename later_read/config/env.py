"""The environment overlay of the settings (`LATER_READ__<SECTION>__<KEY>`), and how a value is shown in a
config error. Used by `config.load_settings` only; see `config` for the rules.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from later_read.errors import ConfigError
from later_read.redact import redact

ENV_PREFIX = "LATER_READ__"
TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list of strings",
    dict: "a table",
}


class EnvValue(str):  # noqa: SLOT000 - it carries .variable, and a str subclass cannot have non-empty slots
    """A string from the environment: coerced to the field's type instead of rejected."""

    variable: str

    def __new__(cls, value: str, variable: str):
        obj = super().__new__(cls, value)
        obj.variable = variable
        return obj


def apply_env(raw: dict, environ: typing.Mapping[str, str], root: type) -> None:
    """Overlay LATER_READ__SECTION__KEY variables onto the parsed file (values stay strings); `root` is the
    settings class whose fields the variables must name."""
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if parts[:2] == ["kafka", "librdkafka"] and len(parts) == 3:
            parts[2] = parts[2].replace("_", ".")
        _check_env_name(name, parts, root)
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"config error: environment variable {name} names a key inside [{part}], which is not a table"
                )
        node[parts[-1]] = EnvValue(value, name)


def _check_env_name(variable: str, parts: list[str], root: type) -> None:
    """A LATER_READ__ variable must name a setting; the error blames the variable, not the file."""
    cls: Any = root
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth])
        if cls is dict:  # the librdkafka pass-through table takes any key, librdkafka checks it later
            if depth == len(parts) - 1:
                return
            raise _env_error(variable, f"[{where}] holds values, not tables")
        fields = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
        if part not in fields:
            label = f"[{where}]" if where else "the top level"
            raise _env_error(variable, f"{label} has no key {part!r} (known: {', '.join(fields)})")
        hint = typing.get_type_hints(cls)[part]
        cls = typing.get_origin(hint) or hint
        if depth < len(parts) - 1 and not (cls is dict or dataclasses.is_dataclass(cls)):
            raise _env_error(variable, f"{key_label(where, part)} is a value, not a table")
    if cls is dict or dataclasses.is_dataclass(cls):
        raise _env_error(variable, f"[{'.'.join(parts)}] is a table; name a key in it")


def _env_error(variable: str, problem: str) -> ConfigError:
    return ConfigError(
        f"config error: environment variable {variable} names no setting: {problem}; fix or unset the variable"
    )


def from_env(origin: Any, value: EnvValue, key: str) -> Any:
    """An environment string converted to the field's type (int, float, bool, list), else kept a string."""
    try:
        if origin is int:
            return int(value)
        if origin is float:
            return float(value)
        if origin is bool:
            return {"true": True, "1": True, "false": False, "0": False}[value.lower()]
        if origin is list:
            return json.loads(value) if value.startswith("[") else [v.strip() for v in value.split(",")]
    except (ValueError, KeyError):
        raise ConfigError(
            f"{key} (from {value.variable}): expected {TYPE_WORDS[origin]}, got {show(str(value))}"
        ) from None
    return str(value)


def key_label(where: str, name: str) -> str:
    return f"[{where}] {name}" if where else name


def env_name(where: str, name: str) -> str:
    parts = [p for p in where.split(".") if p] + [name]
    return ENV_PREFIX + "__".join(p.upper() for p in parts)


def show(value: Any) -> str:
    """A value as a config error quotes it: JSON, redacted (before it is cut, so a cut never splits a URL's
    password from its `@`), at most 60 characters."""
    text = redact(json.dumps(value, default=str, ensure_ascii=False))
    return text if len(text) <= 60 else text[:57] + "..."
