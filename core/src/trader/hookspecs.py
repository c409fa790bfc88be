"""Hook specifications: the whole contract between trader and its plugins.

A plugin is a module (found through the entry-point group ``trader``) whose functions are
decorated with :data:`hookimpl` and named after the hooks below. Every hook is called with
keyword arguments only; an implementation may accept fewer parameters than the specification
(so new parameters can be added without breaking plugins). Registration hooks run once per
plugin, the default plugins first and then installed ones by distribution name, so the first
plugin to register a name keeps it. ``check_order`` and ``on_event`` run in pluggy's order (last
registered first). Hook wrappers are not supported: a plugin that declares one is not loaded.

Hooks are synchronous and cheap: they register factories and make quick decisions. Slow or
I/O-bound work belongs to the objects the factories create, which are async.

Registration hooks (``register_*``) receive a ``register`` callback::

    register(name, factory, *, options=None, summary="")

* ``name`` — the capability's name, chosen by users in ``trader.toml``: lower case letters,
  digits and ``_``, starting with a letter. Names are global per kind: registering a name that
  another plugin already registered is reported as an error and ignored.
* ``factory`` — a callable ``factory(options, context)`` returning the component, where
  ``options`` is the validated options model (or the raw dict when ``options`` is ``None``) and
  ``context`` is a :class:`~trader.interfaces.PluginContext`.
* ``options`` — optional pydantic model class validating the component's configuration table;
  ``trader config check`` uses it to report every mistake by key path.
* ``summary`` — one line for ``trader plugins``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from trader.model import Event, OrderCheck
    from trader.registry import Register

PROJECT_NAME = "trader"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_exchanges(register: Register) -> None:
    """Register exchange adapters.

    :param register: call ``register(name, factory, options=..., summary=...)`` once per
        adapter; ``factory(options, context)`` returns a :class:`~trader.interfaces.Exchange`.

    Called once, when the host loads plugins. Return value ignored.
    """


@hookspec
def register_candle_stores(register: Register) -> None:
    """Register candle stores.

    :param register: call once per store; ``factory(options, context)`` returns a
        :class:`~trader.interfaces.CandleStore` (not yet opened).

    Called once, when the host loads plugins. Return value ignored.
    """


@hookspec
def register_state_stores(register: Register) -> None:
    """Register state stores.

    :param register: call once per store; ``factory(options, context)`` returns a
        :class:`~trader.interfaces.StateStore` (not yet opened).

    Called once, when the host loads plugins. Return value ignored.
    """


@hookspec
def register_strategy_runtimes(register: Register) -> None:
    """Register strategy languages.

    :param register: call once per language, named after it (``lua``, ``python``);
        ``factory(options, context)`` returns a :class:`~trader.interfaces.StrategyRuntime`.

    Called once, when the host loads plugins. Return value ignored.
    """


@hookspec
def register_schedulers(register: Register) -> None:
    """Register schedulers.

    :param register: call once per scheduler; ``factory(options, context)`` returns a
        :class:`~trader.interfaces.Schedule` for the spec given as ``options`` (the
        ``[schedules.<name>]`` table without its ``scheduler`` and ``task`` keys).

    Called once, when the host loads plugins. Return value ignored.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``trader`` command line.

    :param cli: the top-level click group; call ``cli.add_command(...)`` or decorate with
        ``@cli.command()``. Use a name of your own: a command whose name is taken is reported
        and not added.

    Called once when the ``trader`` command starts, before arguments are parsed. Return value
    ignored.
    """


@hookspec
def check_order(check: OrderCheck) -> str | None:
    """Veto an order before it leaves the process (risk rules).

    :param check: the order, rounded and sized, with the account, its balances and positions,
        and the latest price when known.
    :return: a reason (one line, shown to the user and stored with the order) to block the
        order, or ``None`` to let it pass.

    Called for every order, by every plugin that implements it (not firstresult): any single
    veto blocks the order, and every reason given is recorded. Must be fast (it sits on the
    order path) and must not raise; an exception counts as a veto naming the plugin.
    """


@hookspec
def on_event(event: Event) -> None:
    """React to something that happened: a fill, an error, a finished report.

    :param event: ``event.kind`` is dotted (``order.filled``, ``strategy.error``,
        ``report.daily``); ``event.data`` holds plain values and never secrets.

    Called for every event, by every plugin that implements it, after the event is stored.
    Must return quickly (hand slow work to a thread or task); exceptions are logged with the
    plugin's name and otherwise ignored. Return value ignored.
    """
