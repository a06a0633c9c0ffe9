"""Typed settings trees, validated once at start-up, exposed as CLI flags and env variables.

Each component declares one pydantic model whose fields carry a description with the unit.
:func:`add_arguments` turns the model into argparse options (``interval_seconds`` becomes
``--interval-seconds``); :func:`load` reads the parsed flags, then environment variables
named ``TEMPER_<COMPONENT>_<FIELD>``, then the defaults, and reports every invalid field
with its path and the valid values.
"""

import argparse
import os
import textwrap
import types
import typing
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from temper.errors import InvalidSettingsError

ENV_PREFIX = "TEMPER_"


class Settings(BaseModel):
    """Base class of every component's settings tree."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


SettingsT = TypeVar("SettingsT", bound=Settings)


def env_prefix(component: str) -> str:
    """Return the prefix of the component's environment variables, ``TEMPER_<COMPONENT>_``."""
    return f"{ENV_PREFIX}{component.upper()}_"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(annotation: Any) -> Any:
    """Strip ``X | None`` down to X so argparse knows what it parses."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def add_arguments(parser: argparse.ArgumentParser, model: type[Settings], component: str) -> None:
    """Add one option per settings field, with the field's description as help text.

    ``component`` must be the name that :func:`load` receives for the same tree, because the
    parser's epilog names the environment variables that :func:`load` reads.
    """
    prefix = env_prefix(component)
    example = next(iter(model.model_fields), "option")
    parser.epilog = textwrap.fill(
        f"Every option can also be set with an environment variable {prefix}<OPTION>, for "
        f"example {prefix}{example.upper()}. An option given on the command line wins.",
        width=90,
    )
    for name, info in model.model_fields.items():
        field_type = _scalar_type(info.annotation)
        default = info.get_default(call_default_factory=True)
        help_text = info.description or name
        if info.is_required():
            help_text += " (required)"
        elif default is not None and not isinstance(default, list | tuple | dict):
            shown = default.value if isinstance(default, Enum) else default
            help_text += f" (default: {shown})"
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if field_type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(field_type, type) and issubclass(field_type, Enum):
            kwargs["choices"] = [member.value for member in field_type]
            kwargs["metavar"] = "{" + ",".join(kwargs["choices"]) + "}"
        elif typing.get_origin(field_type) in (list, tuple):
            kwargs["action"] = "append"
            kwargs["metavar"] = "VALUE"
            kwargs["help"] += "; repeat the option for several values"
        else:
            kwargs["metavar"] = name.rsplit("_", 1)[-1].upper() if "_" in name else "VALUE"
        parser.add_argument(_flag(name), **kwargs)


def load(
    model: type[SettingsT],
    component: str,
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
) -> SettingsT:
    """Build a validated settings tree from flags, then environment, then defaults."""
    environ = os.environ if environ is None else environ
    prefix = env_prefix(component)
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        from_flag = getattr(args, name, None) if args is not None else None
        if from_flag is not None:
            values[name] = from_flag
            continue
        env_name = prefix + name.upper()
        if env_name in environ:
            raw = environ[env_name]
            field_type = _scalar_type(info.annotation)
            values[name] = raw.split(",") if typing.get_origin(field_type) in (list, tuple) else raw
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise InvalidSettingsError(_describe(error, component, prefix)) from error


def _describe(error: ValidationError, component: str, prefix: str) -> str:
    lines = [f"invalid {component} settings:"]
    for problem in error.errors():
        path = ".".join(str(part) for part in problem["loc"])
        field = str(problem["loc"][0]) if problem["loc"] else ""
        lines.append(
            f"  {path}: {problem['msg']} (got {problem.get('input')!r}); "
            f"set {_flag(field)} or {prefix}{field.upper()}"
        )
    return "\n".join(lines)
