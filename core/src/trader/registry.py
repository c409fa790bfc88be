"""What plugins register: capabilities by kind and name, with the plugin that provided each."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from trader.errors import CapabilityNotFound

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class Kind(str, Enum):
    """The kinds of capability a plugin can register, with the hook that registers each."""

    EXCHANGE = "exchange"
    CANDLE_STORE = "candle_store"
    STATE_STORE = "state_store"
    STRATEGY_RUNTIME = "strategy_runtime"
    SCHEDULER = "scheduler"

    @property
    def hook(self) -> str:
        return {
            Kind.EXCHANGE: "register_exchanges",
            Kind.CANDLE_STORE: "register_candle_stores",
            Kind.STATE_STORE: "register_state_stores",
            Kind.STRATEGY_RUNTIME: "register_strategy_runtimes",
            Kind.SCHEDULER: "register_schedulers",
        }[self]

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class Register(Protocol):
    """The callback a ``register_*`` hook receives."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        options: type[Any] | None = None,
        summary: str = "",
    ) -> None: ...


@dataclass(frozen=True)
class Registration:
    """One capability: its kind and name, how to build it, and which plugin provided it."""

    kind: Kind
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str
    options: type[Any] | None = None
    summary: str = ""

    def build(self, options: Any, context: Any) -> Any:
        """Call the factory with validated options and the plugin context."""
        return self.factory(options, context)


def check_registration(
    name: object, factory: object, options: object, summary: object
) -> str | None:
    """Say why a registration is malformed, or return ``None`` when it is well formed."""
    from pydantic import BaseModel

    if not isinstance(name, str) or not _NAME.match(name):
        return (
            f"capability name {name!r} is malformed: use lower case letters, digits and _, "
            "starting with a letter"
        )
    if not callable(factory):
        return f"{name}: factory {factory!r} is not callable"
    if options is not None and not (isinstance(options, type) and issubclass(options, BaseModel)):
        return f"{name}: options must be a pydantic model class, not {options!r}"
    if not isinstance(summary, str):
        return f"{name}: summary must be a string"
    return None


@dataclass
class Registry:
    """Every registered capability, by kind then name."""

    entries: dict[Kind, dict[str, Registration]] = field(
        default_factory=lambda: {kind: {} for kind in Kind}
    )

    def get(self, kind: Kind, name: str) -> Registration:
        """Return the registration, or raise :class:`CapabilityNotFound` with a suggestion."""
        found = self.entries[kind].get(name)
        if found is None:
            raise CapabilityNotFound(missing_capability_message(kind, name, self.names(kind)))
        return found

    def names(self, kind: Kind) -> list[str]:
        return sorted(self.entries[kind])

    def by_plugin(self, plugin: str) -> dict[str, list[str]]:
        """What one plugin registered: kind value to sorted names (kinds with none left out)."""
        result: dict[str, list[str]] = {}
        for kind, entries in self.entries.items():
            names = sorted(n for n, r in entries.items() if r.plugin == plugin)
            if names:
                result[kind.value] = names
        return result


#: First-party capabilities and the distributions that provide them, for install hints.
KNOWN_PROVIDERS: dict[tuple[Kind, str], str] = {
    (Kind.EXCHANGE, "bitfinex"): "trader-exchange-bitfinex",
    (Kind.CANDLE_STORE, "timescale"): "trader-storage-timescale",
    (Kind.STATE_STORE, "timescale"): "trader-storage-timescale",
    (Kind.CANDLE_STORE, "postgres"): "trader-storage-timescale",
    (Kind.STATE_STORE, "postgres"): "trader-storage-timescale",
    (Kind.CANDLE_STORE, "scylla"): "trader-storage-scylla",
    (Kind.STRATEGY_RUNTIME, "lua"): "trader-strategy-lua",
    (Kind.STRATEGY_RUNTIME, "python"): "trader-strategy-python",
}


def suggested_distribution(kind: Kind, name: str) -> str | None:
    """The first-party distribution that provides ``name``, or ``None`` when none does.

    Only known distributions are suggested: a name made up from a convention could be
    registered by anyone on a package index, and suggesting it would invite typosquatting.
    """
    return KNOWN_PROVIDERS.get((kind, name))


def missing_capability_message(kind: Kind, name: str, available: list[str]) -> str:
    """Say that ``name`` is not installed, and what to do: install it, or fix a typo."""
    have = ", ".join(available) if available else "none"
    message = f"no {kind.label} named {name!r} is installed (installed: {have})"
    distribution = suggested_distribution(kind, name)
    if distribution is not None:
        return f"{message}; install it with: pip install {distribution}"
    close = difflib.get_close_matches(name, available, n=1)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    return f"{message}; `trader plugins` lists what is installed"
