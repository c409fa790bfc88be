"""The bus: messaging between services.

Service calls follow the Majordomo protocol (RFC 7/MDP 0.1 with RFC 8/MMI): a :class:`Broker`
routes requests from a :class:`Client` to workers that a :class:`ServiceHost` runs for
:class:`Service` classes. Messages are typed (:class:`Message`) and travel in msgpack envelopes
(:mod:`trader.bus.codec`). Endpoints (``inproc://``, ``ipc://``, ``tcp://``) and security come from
configuration (:mod:`trader.bus.transport`). See ``docs/bus-guide.md``.

The names below are imported on first use, so ``python -m trader.bus.broker`` and importing one
submodule stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trader.bus.broker import Broker
    from trader.bus.client import Client
    from trader.bus.codec import Envelope, ErrorReply, Message, MessageRegistry, default_registry
    from trader.bus.errors import (
        BusError,
        CallTimeout,
        MalformedMessage,
        NotUnderstood,
        RemoteError,
        ServiceUnavailable,
    )
    from trader.bus.service import Service, ServiceDispatcher, ServiceHost, handler
    from trader.bus.worker import Worker

_WHERE = {
    "Broker": "broker",
    "Client": "client",
    "Envelope": "codec",
    "ErrorReply": "codec",
    "Message": "codec",
    "MessageRegistry": "codec",
    "default_registry": "codec",
    "BusError": "errors",
    "CallTimeout": "errors",
    "MalformedMessage": "errors",
    "NotUnderstood": "errors",
    "RemoteError": "errors",
    "ServiceUnavailable": "errors",
    "Service": "service",
    "ServiceDispatcher": "service",
    "ServiceHost": "service",
    "handler": "service",
    "Worker": "worker",
}

__all__ = [
    "Broker",
    "BusError",
    "CallTimeout",
    "Client",
    "Envelope",
    "ErrorReply",
    "MalformedMessage",
    "Message",
    "MessageRegistry",
    "NotUnderstood",
    "RemoteError",
    "Service",
    "ServiceDispatcher",
    "ServiceHost",
    "ServiceUnavailable",
    "Worker",
    "default_registry",
    "handler",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'trader.bus' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"trader.bus.{module}"), name)
    globals()[name] = value
    return value
