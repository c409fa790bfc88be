"""The plugin host: finds, loads and validates plugins, and calls their hooks.

Plugins come from two places, loaded the same way: the core's default plugins
(:mod:`trader.default_plugins`) and every entry point in the group ``trader``. Environment
variables narrow the set:

* ``TRADER_LOAD_PLUGINS`` — comma-separated entry-point or distribution names: load only these
  (default plugins are always loaded unless disabled).
* ``TRADER_DISABLE_PLUGINS`` — comma-separated names (entry-point, distribution, or default
  plugin names such as ``sqlite``): never load these.

A plugin that fails to import, implements a hook that does not exist, registers something
malformed, or takes a capability name that is already registered is reported by name with the
reason (:attr:`PluginHost.problems`), and everything else keeps working.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import pluggy

import trader
from trader import hookspecs
from trader.errors import CapabilityNotFound, PluginError
from trader.registry import Kind, Registration, Registry, check_registration

if TYPE_CHECKING:
    import click

    from trader.model import Event, OrderCheck

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "trader"
#: The core's own plugins, registered exactly like installed ones (and disabled the same way).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "trader.default_plugins.sqlite",
    "trader.default_plugins.schedulers",
    "trader.default_plugins.paper",
)


@dataclass
class PluginInfo:
    """One plugin as the host saw it: where it came from, what it registered, what went wrong."""

    name: str
    module: str
    distribution: str
    version: str
    default: bool = False
    hooks: list[str] = field(default_factory=list)
    registers: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    loaded: bool = True
    """False for a plugin that was refused before import (an entry-point name clash)."""

    @property
    def error(self) -> str | None:
        """The first problem, or ``None`` when the plugin loaded cleanly."""
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "default": self.default,
            "hooks": self.hooks,
            "registers": self.registers,
            "problems": self.problems,
            "loaded": self.loaded,
        }


@dataclass(frozen=True)
class PluginProblem:
    plugin: str
    distribution: str
    message: str

    def __str__(self) -> str:
        return f"plugin {self.plugin} ({self.distribution}): {self.message}"


def _split_env(value: str | None) -> set[str]:
    return {_normalise(part) for part in (value or "").split(",") if part.strip()}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


class PluginHost:
    """Loads plugins into a pluggy manager and keeps what they registered.

    Build it through :func:`get_plugin_manager`. Hooks are called only through the typed
    methods here (:meth:`add_commands`, :meth:`check_order`, :meth:`emit_event`) and
    :meth:`build`, never through ``pm.hook`` elsewhere.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.only = _split_env(env.get("TRADER_LOAD_PLUGINS"))
        self.disabled = _split_env(env.get("TRADER_DISABLE_PLUGINS"))
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.plugins: dict[str, PluginInfo] = {}
        """Plugins that were loaded (or tried), by name."""
        self.refused: list[PluginInfo] = []
        """Plugins refused before import, because their entry-point name is not unique."""
        self.problems: list[PluginProblem] = []

    # loading ------------------------------------------------------------------------------

    def load(self) -> PluginHost:
        """Load default plugins, then entry points, then collect registrations. Never raises."""
        for module_name in DEFAULT_PLUGINS:
            name = module_name.rsplit(".", 1)[1]
            if _normalise(name) in self.disabled:
                continue
            info = PluginInfo(name, module_name, "trader", trader.__version__, default=True)
            self._load_one(info, functools.partial(importlib.import_module, module_name))
        for entry_point in self._selected_entry_points():
            info = PluginInfo(
                entry_point.name,
                entry_point.value,
                _dist_name(entry_point),
                _dist_version(entry_point),
            )
            self._load_one(info, entry_point.load)
        for kind in Kind:
            self._collect(kind)
        for info in self.plugins.values():
            info.registers = self.registry.by_plugin(info.name)
        self.pm.check_pending()
        return self

    def _selected_entry_points(self) -> list[EntryPoint]:
        """The entry points to load, in distribution order.

        An entry-point name provided by more than one distribution, or equal to a default
        plugin's name, loads from none of them: picking one would let any installed package
        silently replace another (or a built-in) plugin. Each is reported and listed as refused.
        """
        by_name: dict[str, dict[str, EntryPoint]] = {}
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            names = {_normalise(entry_point.name)}
            if entry_point.dist is not None:
                names.add(_normalise(entry_point.dist.name))
            if names & self.disabled or (self.only and not names & self.only):
                continue
            by_name.setdefault(entry_point.name, {})[_dist_name(entry_point)] = entry_point
        chosen: list[EntryPoint] = []
        for name, providers in sorted(by_name.items()):
            default = name in {module.rsplit(".", 1)[1] for module in DEFAULT_PLUGINS}
            if len(providers) == 1 and not default:
                chosen.extend(providers.values())
                continue
            others = sorted(providers) + (["trader (a default plugin)"] if default else [])
            for dist_name, entry_point in sorted(providers.items()):
                rivals = ", ".join(o for o in others if o != dist_name)
                info = PluginInfo(
                    name, entry_point.value, dist_name, _dist_version(entry_point), loaded=False
                )
                self.refused.append(info)
                self._problem(
                    info,
                    f"entry point name {name!r} is also provided by {rivals}; none of them "
                    "is loaded (uninstall the one you do not want)",
                )
        return sorted(chosen, key=lambda ep: (_dist_name(ep), ep.name))

    def _load_one(self, info: PluginInfo, loader: Callable[[], Any]) -> None:
        self.plugins[info.name] = info
        try:
            module = loader()
        except BaseException as error:  # a plugin may raise anything, even SystemExit
            if isinstance(error, KeyboardInterrupt):
                raise
            self._problem(info, f"failed to import: {_describe(error)}")
            return
        try:
            self.pm.register(module, name=info.name)
        except Exception as error:  # pluggy.PluginValidationError and ValueError (duplicates)
            self._problem(info, f"rejected: {_describe(error)}")
            return
        callers = self.pm.get_hookcallers(module) or []
        unknown = [caller.name for caller in callers if caller.spec is None]
        wrappers = [
            caller.name
            for caller in callers
            for impl in caller.get_hookimpls()
            if impl.plugin is module and (impl.hookwrapper or impl.wrapper)
        ]
        if wrappers:
            self.pm.unregister(module)
            for hook_name in wrappers:
                self._problem(
                    info,
                    f"implements {hook_name} as a wrapper, which trader's hooks do not "
                    "support (the plugin is not loaded)",
                )
            return
        if unknown:
            self.pm.unregister(module)
            for hook_name in unknown:
                self._problem(info, _unknown_hook_message(hook_name))
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(module) or [])

    def _collect(self, kind: Kind) -> None:
        caller = getattr(self.pm.hook, kind.hook)
        for impl in caller.get_hookimpls():
            info = self.plugins[impl.plugin_name]
            register = self._register_callback(kind, info)
            try:
                impl.function(**_kwargs_for(impl, register=register))
            except Exception as error:
                self._problem(info, f"{kind.hook} raised {_describe(error)}")

    def _register_callback(self, kind: Kind, info: PluginInfo) -> Callable[..., None]:
        def register(
            name: str,
            factory: Callable[..., Any],
            *,
            options: type[Any] | None = None,
            summary: str = "",
        ) -> None:
            malformed = check_registration(name, factory, options, summary)
            if malformed is not None:
                self._problem(info, f"malformed {kind.label}: {malformed}")
                return
            taken = self.registry.entries[kind].get(name)
            if taken is not None:
                self._problem(
                    info,
                    f"{kind.label} name {name!r} is already registered by plugin {taken.plugin} "
                    f"({taken.distribution}); this registration is ignored",
                )
                return
            self.registry.entries[kind][name] = Registration(
                kind, name, factory, info.name, info.distribution, options, summary
            )

        return register

    def _problem(self, info: PluginInfo, message: str) -> None:
        problem = PluginProblem(info.name, info.distribution, message)
        self.problems.append(problem)
        info.problems.append(message)
        log.warning("%s", problem)

    # queries ------------------------------------------------------------------------------

    def plugin_info(self, name: str) -> PluginInfo | None:
        """The plugin loaded under ``name`` (entry-point or default plugin name)."""
        return self.plugins.get(name)

    def registration(self, kind: Kind, name: str) -> Registration:
        """The capability ``name`` of ``kind``; ``CapabilityNotFound`` (with a hint) if absent."""
        try:
            return self.registry.get(kind, name)
        except CapabilityNotFound as error:
            if self.disabled:
                names = ", ".join(sorted(self.disabled))
                raise CapabilityNotFound(
                    f"{error} (TRADER_DISABLE_PLUGINS is set: {names})"
                ) from None
            raise

    def build(self, kind: Kind, name: str, options: Any, context: Any) -> Any:
        """Build the capability ``name`` of ``kind`` from options (validated here) and context."""
        registration = self.registration(kind, name)
        if registration.options is not None and not isinstance(options, registration.options):
            from trader.config import validate_options

            options = validate_options(registration, options or {})
        try:
            return registration.build(options, context)
        except PluginError:
            raise
        except Exception as error:
            if isinstance(error, trader.errors.TraderError):
                raise
            raise PluginError(
                f"{kind.label} {name!r} from plugin {registration.plugin} "
                f"({registration.distribution}) failed to start: {_describe(error)}"
            ) from error

    # typed hook callers -------------------------------------------------------------------

    def add_commands(self, cli: click.Group) -> None:
        """Let plugins add CLI commands; one that replaces an existing command is reported."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            info = self.plugins[impl.plugin_name]
            before = dict(cli.commands)
            try:
                impl.function(**_kwargs_for(impl, cli=cli))
            except Exception as error:
                self._problem(info, f"register_commands raised {_describe(error)}")
            for name, command in before.items():
                if cli.commands.get(name) is not command:
                    cli.commands[name] = command
                    self._problem(
                        info,
                        f"command {name!r} already exists; the plugin's command is ignored",
                    )

    def check_order(self, check: OrderCheck) -> list[str]:
        """Ask every risk plugin about an order; return every veto reason (empty: allowed)."""
        reasons: list[str] = []
        for impl in reversed(self.pm.hook.check_order.get_hookimpls()):
            try:
                reason = impl.function(**_kwargs_for(impl, check=check))
            except Exception as error:
                reason = f"risk check failed: {_describe(error)}"
            if reason is not None:
                reasons.append(f"{impl.plugin_name}: {reason}")
        return reasons

    def emit_event(self, event: Event) -> None:
        """Tell every plugin about an event; a plugin's exception is logged and ignored."""
        for impl in reversed(self.pm.hook.on_event.get_hookimpls()):
            try:
                impl.function(**_kwargs_for(impl, event=event))
            except Exception:
                log.exception("plugin %s failed handling event %s", impl.plugin_name, event.kind)


def _dist_name(entry_point: EntryPoint) -> str:
    return entry_point.dist.name if entry_point.dist is not None else "unknown"


def _dist_version(entry_point: EntryPoint) -> str:
    return entry_point.dist.version if entry_point.dist is not None else "unknown"


def _kwargs_for(impl: pluggy.HookImpl, **available: Any) -> dict[str, Any]:
    """Pass an implementation only the hook arguments it declares (it may take fewer)."""
    return {name: available[name] for name in impl.argnames if name in available}


def _describe(error: BaseException) -> str:
    """One line: the exception's type and message (multi-line messages joined, long ones cut)."""
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if len(text) > 400:
        text = text[:397] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _unknown_hook_message(name: str) -> str:
    known = [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "trader_spec")]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"implements unknown hook {name!r}{hint} (the plugin is not loaded)"


_host: PluginHost | None = None


def get_plugin_manager() -> PluginHost:
    """The process-wide plugin host, loaded on first use."""
    global _host
    if _host is None:
        _host = PluginHost().load()
    return _host


def reset_plugin_manager() -> None:
    """Forget the loaded host, so the next :func:`get_plugin_manager` loads afresh."""
    global _host
    _host = None
