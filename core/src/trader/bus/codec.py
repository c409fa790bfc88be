"""Envelopes and typed messages: what travels in one frame on the bus.

An envelope is one msgpack frame holding ``[type, version, id, correlation_id, sequence,
time_ms, body]``. The body is whatever the message type makes of itself (``to_body``); domain
model objects (:mod:`trader.model`) travel inside bodies as the model codec's extension types.

A message type is a dataclass deriving from :class:`Message` with a wire name::

    @dataclass(frozen=True)
    class Ping(Message, type_name="echo.ping"):
        text: str

Defining the class registers it in :data:`default_registry`. The wire name and field order are
the contract; bump ``version`` when the body changes shape and let ``from_body`` read old ones.
Receivers never crash on bytes: :func:`decode_envelope` raises :class:`MalformedMessage` and
:meth:`MessageRegistry.decode` raises :class:`NotUnderstood`, both subclasses of ``BusError``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from typing_extensions import Self

from trader.bus.errors import MalformedMessage, NotUnderstood
from trader.errors import ModelError
from trader.model.codec import MODEL_TYPES, pack, unpack

#: Prefix of the wire names of domain model types sent as whole messages.
MODEL_PREFIX: Final = "model."
#: Largest id length accepted from the wire.
MAX_ID_BYTES: Final = 64


class _IdSource:
    """Unique 16-byte ids: a random per-process prefix and a counter (cheaper than uuid4)."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8)
        self.counter = itertools.count(1)

    def next(self) -> bytes:
        return self.prefix + next(self.counter).to_bytes(8, "big")


_ids = _IdSource()


def new_message_id() -> bytes:
    """Return a new message id, unique across processes and hosts (random 64-bit prefix)."""
    return _ids.prefix + next(_ids.counter).to_bytes(8, "big")


def now_ms() -> int:
    """Return the wall-clock time in integer milliseconds since the epoch, as envelopes carry."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message on the wire: its type, schema version, ids, sequence, send time and body."""

    type: str
    version: int
    id: bytes
    correlation_id: bytes
    sequence: int
    time_ms: int
    body: Any


def encode_envelope(envelope: Envelope) -> bytes:
    """Encode an envelope to one msgpack frame."""
    return pack(
        [
            envelope.type,
            envelope.version,
            envelope.id,
            envelope.correlation_id,
            envelope.sequence,
            envelope.time_ms,
            envelope.body,
        ]
    )


def decode_envelope(frame: bytes) -> Envelope:
    """Decode one frame; raise :class:`MalformedMessage` for anything but a valid envelope."""
    try:
        value = unpack(frame)
    except ModelError as error:
        raise MalformedMessage(f"not an envelope: {error}") from None
    except RecursionError:
        raise MalformedMessage("not an envelope: nested too deeply") from None
    if type(value) is not list or len(value) != 7:
        raise MalformedMessage("not an envelope: expected a list of 7 items")
    type_name, version, message_id, correlation_id, sequence, time_ms, body = value
    if type(type_name) is not str or not type_name:
        raise MalformedMessage("envelope type must be a non-empty string")
    if (
        type(version) is not int
        or type(sequence) is not int
        or type(time_ms) is not int
        or version < 0
        or sequence < 0
        or time_ms < 0
    ):
        raise MalformedMessage("envelope version, sequence and time must be integers >= 0")
    if (
        type(message_id) is not bytes
        or type(correlation_id) is not bytes
        or len(message_id) > MAX_ID_BYTES
        or len(correlation_id) > MAX_ID_BYTES
    ):
        raise MalformedMessage(f"envelope ids must be bytes, at most {MAX_ID_BYTES} long")
    return Envelope(type_name, version, message_id, correlation_id, sequence, time_ms, body)


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(field.name for field in dataclasses.fields(cls))
        _FIELD_NAMES[cls] = names
    return names


class Message:
    """Base of typed bus messages: a dataclass with a wire name.

    Subclass with ``class X(Message, type_name="area.x", version=1)`` and decorate with
    ``@dataclass`` (not ``slots=True``: that replaces the registered class). The default body is
    the list of field values in declaration order; override :meth:`to_body` and
    :meth:`from_body` for another shape or to read older versions.
    """

    type_name: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1

    def __init_subclass__(
        cls, *, type_name: str | None = None, version: int = 1, register: bool = True
    ) -> None:
        super().__init_subclass__()
        if type_name is not None:
            cls.type_name = type_name
            cls.schema_version = version
            if register:
                default_registry.add(cls)

    def to_body(self) -> Any:
        """Return the body that represents this message (msgpack-able, model objects allowed)."""
        return [getattr(self, name) for name in _field_names(type(self))]

    @classmethod
    def from_body(cls, body: Any, version: int) -> Self:
        """Build the message from a body of schema ``version``; raise ValueError if malformed."""
        if type(body) is not list:
            raise ValueError("body must be a list of field values")
        names = _field_names(cls)
        if len(body) != len(names):
            raise ValueError(f"body has {len(body)} values, {cls.__name__} has {len(names)}")
        return cls(*body)


class MessageRegistry:
    """Message types by wire name; also every :mod:`trader.model` type as ``model.<Name>``."""

    def __init__(self) -> None:
        self._types: dict[str, type[Message]] = {}

    def add(self, cls: type[Message]) -> None:
        """Register ``cls`` under its wire name; a redefinition of the same class replaces it.

        Raise ValueError if another class already holds the name.
        """
        name = cls.type_name
        if not name or name.startswith(MODEL_PREFIX):
            raise ValueError(f"{cls.__qualname__}: invalid message type name {name!r}")
        held = self._types.get(name)
        if held is not None and (held.__module__, held.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ValueError(
                f"message type name {name!r} is taken by {held.__module__}.{held.__qualname__}"
            )
        self._types[name] = cls

    def get(self, type_name: str) -> type[Any] | None:
        """Return the class registered under ``type_name``, or None."""
        if type_name.startswith(MODEL_PREFIX):
            return MODEL_TYPES.get(type_name[len(MODEL_PREFIX) :])
        return self._types.get(type_name)

    def names(self) -> list[str]:
        """Return every registered wire name (model types excluded), sorted."""
        return sorted(self._types)

    def envelope(
        self,
        message: Any,
        *,
        message_id: bytes | None = None,
        correlation_id: bytes = b"",
        sequence: int = 0,
    ) -> Envelope:
        """Wrap ``message`` (a :class:`Message` or a model object) in a new envelope."""
        if isinstance(message, Message):
            type_name, version, body = message.type_name, message.schema_version, message.to_body()
        elif type(message).__name__ in MODEL_TYPES:
            type_name, version, body = MODEL_PREFIX + type(message).__name__, 1, message
        else:
            raise TypeError(f"{type(message).__name__} is not a bus message type")
        return Envelope(
            type_name,
            version,
            message_id if message_id is not None else new_message_id(),
            correlation_id,
            sequence,
            now_ms(),
            body,
        )

    def decode(self, envelope: Envelope) -> Any:
        """Return the message an envelope carries; raise :class:`NotUnderstood` if unknown."""
        cls = self.get(envelope.type)
        if cls is None:
            raise NotUnderstood(envelope.type)
        if envelope.type.startswith(MODEL_PREFIX):
            if not isinstance(envelope.body, cls):
                raise NotUnderstood(envelope.type, "body is not that model type")
            return envelope.body
        if envelope.version > cls.schema_version:
            raise NotUnderstood(
                envelope.type,
                f"schema version {envelope.version} is newer than {cls.schema_version}",
            )
        try:
            return cls.from_body(envelope.body, envelope.version)
        except Exception as error:  # a type's from_body may raise anything on a bad body
            raise NotUnderstood(envelope.type, f"malformed body: {error}") from None


#: The registry message classes join when they are defined.
default_registry: Final = MessageRegistry()


@dataclass(frozen=True)
class ErrorReply(Message, type_name="bus.error"):
    """A failed call's reply: ``code`` is one of :data:`ERROR_CODES`."""

    code: str
    error_type: str
    message: str


#: Error codes an :class:`ErrorReply` carries.
ERROR_CODES: Final = frozenset({"not_understood", "remote_error", "service_unavailable"})
