"""Turn validation failures into one-line problems: ``FILE: key.path: what is wrong``.

pydantic's own messages quote the input value; these never do, so a secret that lands in the
wrong place is not printed. Key paths are written the TOML way: ``exchanges.bitfinex.api_key``,
``assignments[2].symbol``, with quotes around keys that are not bare (``exchanges."a.b"``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from trader.config.secrets import SecretRef, describe_type

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

#: The error type our own validators raise; ``ctx["problems"]`` may list several at once.
CONFIG_ERROR_TYPE = "trader_config"


def config_problem(message: str, *, key: str | None = None) -> PydanticCustomError:
    """An error for a pydantic validator to raise; ``key`` names a sub-key of the model."""
    problems = [[key, message]] if key else [["", message]]
    return PydanticCustomError(
        CONFIG_ERROR_TYPE, "{message}", {"message": message, "problems": problems}
    )


def config_problems(problems: Sequence[tuple[str, str]]) -> PydanticCustomError:
    """One error carrying several ``(sub_key, message)`` problems of the same model."""
    text = "; ".join(message for _, message in problems)
    return PydanticCustomError(
        CONFIG_ERROR_TYPE,
        "{message}",
        {"message": text, "problems": [list(problem) for problem in problems]},
    )


def key_path(loc: Iterable[str | int]) -> str:
    """Format a location as a TOML key path."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        name = part if _BARE_KEY.match(part) else '"' + part.replace('"', '\\"') + '"'
        text = f"{text}.{name}" if text else name
    return text


def join(prefix: str, path: str) -> str:
    """Join a prefix (``"trader.toml: exchanges.x"``, may be empty) and a key path."""
    if not prefix:
        return path
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def place(where: str, loc: Loc) -> str:
    """``WHERE.key.path``: ``where`` (may be empty) is a file label and key prefix."""
    return join(where, key_path(loc))


def format_problem(where: str, loc: Loc, message: str) -> str:
    """``WHERE.key.path: message`` (the place left out when it is empty)."""
    location = place(where, loc)
    return f"{location}: {message}" if location else message


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean X?"`` when a candidate is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def known_fields(model: type[BaseModel]) -> list[str]:
    """Every key a model accepts: field names and their aliases."""
    names: list[str] = []
    for name, field in model.model_fields.items():
        names.append(name)
        if field.alias:
            names.append(field.alias)
        if isinstance(field.validation_alias, str):
            names.append(field.validation_alias)
    return names


def validation_problems(
    error: ValidationError, model: type[BaseModel] | None = None
) -> list[Problem]:
    """Every error of ``error`` as ``(loc, message)``, messages free of input values."""
    problems: list[Problem] = []
    for detail in error.errors(include_url=False):
        problems.extend(_detail_problems(detail, model))
    return problems


def _detail_problems(detail: ErrorDetails, model: type[BaseModel] | None) -> list[Problem]:
    loc: Loc = tuple(detail["loc"])
    kind = detail["type"]
    ctx: dict[str, Any] = dict(detail.get("ctx") or {})
    value = detail.get("input")
    if kind == CONFIG_ERROR_TYPE:
        listed = ctx.get("problems") or [["", str(ctx.get("message", ""))]]
        return [((*loc, *([key] if key else [])), str(message)) for key, message in listed]
    if kind == "extra_forbidden":
        hint = ""
        if model is not None and loc and isinstance(loc[-1], str):
            hint = did_you_mean(loc[-1], fields_at(model, loc[:-1]))
        return [(loc, f"unknown key{hint}")]
    return [(loc, describe_error(kind, detail["msg"], ctx, value))]


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dataclass_type": "a table",
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "path_type": "a string (a path)",
    "decimal_type": "a number",
    "decimal_parsing": "a number",
    "datetime_type": "a date-time",
    "date_type": "a date",
}


def describe_error(kind: str, message: str, ctx: dict[str, Any], value: object) -> str:
    """Describe one pydantic error without quoting the input."""
    if kind == "missing":
        return "required key is missing"
    if kind == "string_type" and isinstance(value, SecretRef):
        return (
            "holds a secret reference, but the plugin's options model expects a plain string; "
            "the plugin must declare this option as trader.config.SecretRef"
        )
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe_type(value)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind == "enum":
        return f"must be one of {ctx.get('expected', '')}"
    if kind == "value_error" and message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    elif kind == "assertion_error" and message.startswith("Assertion failed, "):
        message = message[len("Assertion failed, ") :]
    message = message.replace("Input should be", "must be")
    message = message.replace("String should have", "must have")
    return message[:1].lower() + message[1:]


def fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys accepted at ``loc`` inside ``model`` (nested models followed; ``[]`` if unknown)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return known_fields(current)
    return []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model in an annotation (``M``, ``M | None``, ``list[M]``, ``dict[str, M]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()) or ():
        found = _model_in(argument)
        if found is not None:
            return found
    return None
