"""Validate a component's options against the options model its plugin registered."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from trader.config.problems import (
    Loc,
    did_you_mean,
    format_problem,
    known_fields,
    place,
    validation_problems,
)
from trader.config.secrets import SecretRef, is_secret_option, reference_problem
from trader.errors import ConfigError
from trader.registry import Registration


def validate_options(
    registration: Registration,
    raw: Mapping[str, Any],
    *,
    where: str = "",
    reserved: Iterable[str] = (),
    config_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """Check ``raw`` options for ``registration`` and return what its factory takes.

    Returns an instance of ``registration.options``, or the options as a plain dict when the
    plugin registered no options model. Options whose names mark them as secrets (see
    :func:`~trader.config.secrets.is_secret_option`) must be references and arrive as
    :class:`~trader.config.SecretRef`. Keys the model does not declare are errors unless the
    model allows extra keys; ``reserved`` names the table's own keys (such as ``plugin``) so
    "did you mean" hints can suggest them too.

    Raises :class:`~trader.errors.ConfigError` listing every problem, each as
    ``WHERE.key: what is wrong`` where ``where`` is the table's location (for example
    ``"trader.toml: storage.candles"``). Messages never contain option values.
    """
    problems: list[str] = []
    reported: list[Loc] = []
    data = {
        key: _secrets(value, (key,), is_secret_option(key), where, reported, config_dir, environ)
        for key, value in raw.items()
    }
    problems.extend(
        format_problem(where, loc, reference_problem(_at(raw, loc)) or "") for loc in reported
    )
    model = registration.options
    if model is None:
        if problems:
            raise ConfigError(problems)
        return data
    if not (isinstance(model, type) and issubclass(model, BaseModel)):  # pragma: no cover
        raise ConfigError([format_problem(where, (), "the plugin's options model is not pydantic")])
    if model.model_config.get("extra") != "allow":
        names = known_fields(model)
        for key in [key for key in data if key not in names]:
            hint = did_you_mean(key, [*names, *reserved])
            problems.append(
                format_problem(
                    where,
                    (key,),
                    f"unknown key: {registration.kind.label} {registration.name!r} has no such "
                    f"option{hint}",
                )
            )
            del data[key]
    context = {"where": where, "config_dir": config_dir, "environ": environ}
    result: Any = None
    try:
        result = model.model_validate(data, context=context)
    except ValidationError as error:
        for loc, message in validation_problems(error, model):
            if not any(loc[: len(done)] == done for done in reported):
                problems.append(format_problem(where, loc, message))
    except Exception as error:  # a plugin's validator may fail in any way
        problems.append(
            format_problem(
                where,
                (),
                f"the options model of plugin {registration.plugin} ({registration.distribution}) "
                f"failed: {type(error).__name__}",
            )
        )
    if problems:
        raise ConfigError(problems)
    return result


def _secrets(
    value: Any,
    loc: Loc,
    secret: bool,
    where: str,
    reported: list[Loc],
    config_dir: Path | None,
    environ: Mapping[str, str] | None,
) -> Any:
    """Turn secret-named reference text into :class:`SecretRef`; record where literals are."""
    if isinstance(value, Mapping):
        return {
            key: _secrets(
                item,
                (*loc, key),
                secret or is_secret_option(str(key)),
                where,
                reported,
                config_dir,
                environ,
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _secrets(item, (*loc, index), secret, where, reported, config_dir, environ)
            for index, item in enumerate(value)
        ]
    if not secret or not isinstance(value, str):
        return value
    if reference_problem(value) is not None:
        reported.append(loc)
        return value
    return SecretRef.parse(value, where=place(where, loc), base_dir=config_dir, environ=environ)


def _at(data: Any, loc: Loc) -> Any:
    for part in loc:
        data = data[part]
    return data
