"""Secret references: ``${ENV_NAME}`` or ``file:PATH``, never the secret itself.

A configuration file may be committed, shared or printed, so it never holds a secret: each
field that does (``api_key``, ``api_secret``, ``secret_key``, and any plugin option whose name
says it holds one) holds a *reference* instead. :class:`SecretRef` keeps the reference and reads
the value only when :meth:`SecretRef.reveal` is called; its ``str()`` and ``repr()`` show the
reference, never the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from trader.errors import ConfigError

SecretKind = Literal["env", "file"]

FILE_PREFIX = "file:"
_ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")

#: What a literal secret is told to become.
LITERAL_VALUE_MESSAGE = "literal secrets are not allowed; use ${ENV_VAR} or file:PATH"

#: Words that mark an option name as holding a secret (matched anywhere in the lower-case name).
SECRET_WORDS: tuple[str, ...] = (
    "secret",
    "password",
    "passwd",
    "passphrase",
    "token",
    "key",
    "credential",
)

#: Option names that contain a secret word but hold no secret.
NON_SECRET_OPTIONS: frozenset[str] = frozenset(
    {
        "keyspace",
        "keys_dir",
        "key_dir",
        "key_prefix",
        "key_size",
        "key_bits",
        "primary_key",
        "partition_key",
        "sort_key",
        "public_key",
        "server_public_key",
        "token_ttl",
    }
)
#: Suffixes of option names that hold a location (a path to a key file is not the key).
_NON_SECRET_SUFFIXES: tuple[str, ...] = ("_dir", "_file", "_path")


def is_secret_option(name: str) -> bool:
    """Say whether an option called ``name`` must hold a secret reference, not a literal.

    True when the name contains one of :data:`SECRET_WORDS`, unless it is one of
    :data:`NON_SECRET_OPTIONS` or ends in ``_dir``, ``_file`` or ``_path``.
    """
    lowered = name.lower()
    if lowered in NON_SECRET_OPTIONS or lowered.endswith(_NON_SECRET_SUFFIXES):
        return False
    return any(word in lowered for word in SECRET_WORDS)


def reference_problem(value: object) -> str | None:
    """Say why ``value`` is not a secret reference, without ever quoting it; ``None`` if it is."""
    if not isinstance(value, str):
        return (
            f'expected a secret reference such as "${{ENV_VAR}}" or "file:PATH", '
            f"got {describe_type(value)}"
        )
    text = value.strip()
    if text.startswith(FILE_PREFIX):
        if not text[len(FILE_PREFIX) :].strip():
            return "a file: reference needs a path, such as file:~/.config/trader/secret"
        return None
    if text.startswith("${"):
        if _ENV_REFERENCE.match(text) is None:
            return (
                "malformed environment reference: write ${NAME}, where NAME has only letters, "
                "digits and _"
            )
        return None
    return LITERAL_VALUE_MESSAGE


def describe_type(value: object) -> str:
    """Name the TOML type of ``value`` (``"a string"``, ``"a table"``...), never the value."""
    if isinstance(value, SecretRef):
        return "a secret reference"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"


class SecretRef:
    """A reference to a secret held in an environment variable or a file.

    Parse one with :meth:`parse` from ``"${ENV_NAME}"`` or ``"file:PATH"`` (``~`` is expanded; a
    relative path is resolved against the configuration file's directory). :meth:`reveal` reads
    the value each time it is called, so a rotated secret is picked up without a reload.
    ``str()`` gives the reference text back and ``repr()`` shows it; neither ever contains the
    value. Plugin options models declare secret fields with this type.
    """

    __slots__ = ("_base_dir", "_environ", "_kind", "_target", "_where")

    def __init__(
        self,
        kind: SecretKind,
        target: str,
        *,
        where: str = "",
        base_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if kind not in ("env", "file"):
            raise ValueError(f"secret reference kind must be 'env' or 'file', not {kind!r}")
        self._kind: SecretKind = kind
        self._target = target
        self._where = where
        self._base_dir = base_dir
        self._environ = environ

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        where: str = "",
        base_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> SecretRef:
        """Parse ``"${ENV_NAME}"`` or ``"file:PATH"``.

        ``where`` names the key (``"trader.toml: exchanges.bitfinex.api_key"``) in error
        messages; ``base_dir`` resolves relative file paths; ``environ`` replaces
        ``os.environ`` for lookups. Raises :class:`~trader.errors.ConfigError` for anything
        else, including a literal secret, whose text is never repeated.
        """
        problem = reference_problem(text)
        if problem is not None:
            raise ConfigError([f"{where}: {problem}" if where else problem])
        text = text.strip()
        if text.startswith(FILE_PREFIX):
            return cls(
                "file",
                text[len(FILE_PREFIX) :].strip(),
                where=where,
                base_dir=base_dir,
                environ=environ,
            )
        match = _ENV_REFERENCE.match(text)
        assert match is not None  # reference_problem accepted it
        return cls("env", match.group(1), where=where, base_dir=base_dir, environ=environ)

    @property
    def kind(self) -> SecretKind:
        """``"env"`` or ``"file"``."""
        return self._kind

    @property
    def target(self) -> str:
        """The environment variable's name, or the file path as written."""
        return self._target

    @property
    def where(self) -> str:
        """The key this reference was read from, for error messages (may be empty)."""
        return self._where

    @property
    def reference(self) -> str:
        """The reference as written in a configuration file."""
        return f"${{{self._target}}}" if self._kind == "env" else f"{FILE_PREFIX}{self._target}"

    @property
    def path(self) -> Path | None:
        """The resolved path of a ``file:`` reference; ``None`` for an environment reference."""
        if self._kind != "file":
            return None
        candidate = Path(self._target).expanduser()
        if candidate.is_absolute() or self._base_dir is None:
            return candidate
        return self._base_dir / candidate

    def bind(
        self,
        *,
        where: str | None = None,
        base_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> SecretRef:
        """Return a copy that names ``where`` in errors and resolves against ``base_dir``."""
        return SecretRef(
            self._kind,
            self._target,
            where=self._where if where is None else where,
            base_dir=self._base_dir if base_dir is None else base_dir,
            environ=self._environ if environ is None else environ,
        )

    def reveal(self) -> str:
        """Read the secret now and return it.

        Surrounding whitespace (such as a file's trailing newline) is removed. Raises
        :class:`~trader.errors.ConfigError` naming the key and the variable or file, never a
        value, when the variable is unset or empty or the file is missing, unreadable or empty.
        """
        if self._kind == "env":
            environ = os.environ if self._environ is None else self._environ
            value = environ.get(self._target)
            if value is None:
                self._fail(f"environment variable {self._target} is not set")
            value = value.strip()
            if not value:
                self._fail(f"environment variable {self._target} is empty")
            return value
        path = self.path
        assert path is not None
        try:
            value = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            self._fail(f"secret file {path} does not exist")
        except IsADirectoryError:
            self._fail(f"secret file {path} is a directory")
        except PermissionError:
            self._fail(f"secret file {path} cannot be read: permission denied")
        except UnicodeDecodeError:
            self._fail(f"secret file {path} is not UTF-8 text")
        except OSError as error:
            self._fail(f"secret file {path} cannot be read: {error.strerror or 'I/O error'}")
        if not value:
            self._fail(f"secret file {path} is empty")
        return value

    def _fail(self, message: str) -> NoReturn:
        raise ConfigError([f"{self._where}: {message}" if self._where else message])

    def __str__(self) -> str:
        return self.reference

    def __repr__(self) -> str:
        return f"SecretRef({self.reference!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretRef):
            return NotImplemented
        return (self._kind, self._target, self.path) == (other._kind, other._target, other.path)

    def __hash__(self) -> int:
        return hash((self._kind, self._target))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle the reference and its context only; the environ mapping stays behind.
        return (_rebuild, (self._kind, self._target, self._where, self._base_dir))

    # pydantic integration -----------------------------------------------------------------

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.with_info_plain_validator_function(
            _validate_reference,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="always"),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": r"^(\$\{[A-Za-z_][A-Za-z0-9_]*\}|file:.+)$",
            "description": "a secret reference: ${ENV_VAR} or file:PATH",
        }


def _rebuild(kind: SecretKind, target: str, where: str, base_dir: Path | None) -> SecretRef:
    return SecretRef(kind, target, where=where, base_dir=base_dir)


def _validate_reference(value: object, info: core_schema.ValidationInfo) -> SecretRef:
    """Accept a :class:`SecretRef` or reference text; reject literals without quoting them.

    The validation context may carry ``where`` (the table's key path), ``config_dir`` and
    ``environ``, which are bound into references parsed here.
    """
    context = info.context if isinstance(info.context, Mapping) else {}
    if isinstance(value, SecretRef):
        return value
    problem = reference_problem(value)
    if problem is not None:
        raise PydanticCustomError("secret_reference", "{message}", {"message": problem})
    assert isinstance(value, str)
    where = str(context.get("where", ""))
    if info.field_name:
        where = f"{where}.{info.field_name}" if where else info.field_name
    base_dir = context.get("config_dir")
    environ = context.get("environ")
    return SecretRef.parse(
        value,
        where=where,
        base_dir=base_dir if isinstance(base_dir, Path) else None,
        environ=environ if isinstance(environ, Mapping) else None,
    )
