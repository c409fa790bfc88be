"""``trader config check``: does the installation provide everything the file names?"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trader.config.loader import read_config
from trader.config.model import ComponentConfig, Config
from trader.config.options import validate_options
from trader.config.problems import Loc, key_path
from trader.errors import CapabilityNotFound, ConfigError
from trader.registry import Kind, Registration

if TYPE_CHECKING:
    from trader.plugins import PluginHost


def check_file(
    path: str | Path | None = None,
    host: PluginHost | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Every problem with a configuration file, from its TOML syntax to its plugins' options.

    Finds the file as :func:`~trader.config.load_config` does and reports all it would, plus
    all :func:`check_config` would, in one list in file order. A table with a problem of its own
    is left out of the plugin checks, but every other table is still checked, so a misspelt
    key in ``[risk]`` does not hide a bad option in ``[storage.candles]`` or a missing
    exchange plugin. ``host`` defaults to the process's plugin host. An empty list means the
    file loads and runs with the plugins ``host`` loaded. Secret values are never shown.
    """
    try:
        report = read_config(path, environ=environ)
    except ConfigError as error:
        return list(error.problems)
    if host is None:
        from trader.plugins import get_plugin_manager

        host = get_plugin_manager()
    found = _Checker(report.config, host, skip=report.skipped).run()
    return report.in_file_order([*report.problems, *found])


def check_config(config: Config, host: PluginHost) -> list[str]:
    """Every problem that stops ``config`` from running with the plugins ``host`` loaded.

    Checks that every capability the file names is registered (candle and state stores,
    exchanges, strategy runtimes, schedulers), suggesting the distribution to install when a
    known one provides it; validates each component's options with its plugin's options model;
    checks that strategy files and the CURVE keys directory exist; and reads every secret
    reference, so a missing variable or file shows now rather than at start-up (values are
    never shown). Each problem is ``FILE: key.path: what is wrong``. An empty list means all
    is well.
    """
    return [line for _, line in _Checker(config, host).run()]


def component_problems(
    config: Config,
    host: PluginHost,
    *,
    skip: Callable[[Loc], bool] | None = None,
    components: Collection[str] | None = None,
) -> list[tuple[Loc, str]]:
    """The capability and option problems of ``config``'s components, as ``(loc, line)``.

    Checks that each store, exchange, strategy runtime and scheduler is registered in ``host``
    and validates its options; files and secrets are left alone. ``components`` names the
    tables to check by key path (``"storage.candles"``, or ``"exchanges"`` for every exchange;
    ``None``: all); ``skip`` says which locations to leave out (tables that had problems of
    their own).
    """
    checker = _Checker(config, host, skip=skip, components=components)
    checker.plugins()
    return checker.problems


def _wanted(components: Collection[str] | None) -> Callable[[Loc], bool]:
    if components is None:
        return lambda loc: True
    prefixes = tuple(components)

    def wanted(loc: Loc) -> bool:
        path = key_path(loc)
        return any(path == prefix or path.startswith(f"{prefix}.") for prefix in prefixes)

    return wanted


class _Checker:
    def __init__(
        self,
        config: Config,
        host: PluginHost,
        *,
        skip: Callable[[Loc], bool] | None = None,
        components: Collection[str] | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.label = config.label
        self.skip = skip or (lambda loc: False)
        self.wanted = _wanted(components)
        self.problems: list[tuple[Loc, str]] = []

    def problem(self, loc: Loc, message: str) -> None:
        path = key_path(loc)
        self.problems.append(
            (loc, f"{self.label}: {path}: {message}" if path else f"{self.label}: {message}")
        )

    def included(self, loc: Loc) -> bool:
        return not self.skip(loc) and self.wanted(loc)

    def capability(self, kind: Kind, name: str, loc: Loc) -> Registration | None:
        try:
            return self.host.registration(kind, name)
        except CapabilityNotFound as error:
            self.problem(loc, str(error))
            return None

    def options(
        self, registration: Registration, raw: dict[str, Any], loc: Loc, reserved: tuple[str, ...]
    ) -> None:
        try:
            validate_options(
                registration,
                raw,
                where=f"{self.label}: {key_path(loc)}",
                reserved=reserved,
                config_dir=self.config.config_dir,
                environ=self.config.environ,
            )
        except ConfigError as error:
            self.problems.extend((loc, problem) for problem in error.problems)

    def component(self, kind: Kind, component: ComponentConfig, loc: Loc) -> None:
        if not self.included(loc):
            return
        registration = self.capability(kind, component.plugin, (*loc, "plugin"))
        if registration is not None:
            self.options(registration, component.plugin_options(), loc, ("plugin",))

    def run(self) -> list[tuple[Loc, str]]:
        self.plugins()
        self.files_and_secrets()
        return self.problems

    def plugins(self) -> None:
        """Every capability the configuration names is registered, with valid options."""
        config = self.config
        self.component(Kind.CANDLE_STORE, config.storage.candles, ("storage", "candles"))
        self.component(Kind.STATE_STORE, config.storage.state, ("storage", "state"))
        for name, exchange in config.exchanges.items():
            loc: Loc = ("exchanges", name)
            if not self.included(loc):
                continue
            registration = self.capability(Kind.EXCHANGE, exchange.plugin, loc)
            if registration is not None:
                self.options(registration, exchange.plugin_options(), loc, ("plugin",))
        for name, strategy in config.strategies.items():
            loc = ("strategies", name)
            if self.included(loc):
                self.capability(Kind.STRATEGY_RUNTIME, strategy.runtime, (*loc, "runtime"))
        for name, schedule in config.schedules.items():
            loc = ("schedules", name)
            if not self.included(loc):
                continue
            registration = self.capability(Kind.SCHEDULER, schedule.scheduler, (*loc, "scheduler"))
            if registration is not None:
                self.options(
                    registration,
                    schedule.plugin_options(),
                    loc,
                    ("scheduler", "task", "args", "enabled"),
                )

    def files_and_secrets(self) -> None:
        """Strategy files and the keys directory exist; every secret reference can be read."""
        config = self.config
        for name, strategy in config.strategies.items():
            loc: Loc = ("strategies", name, "path")
            if self.skip(loc):
                continue
            source = config.resolve_path(strategy.path)
            if not source.is_file():
                self.problem(
                    loc,
                    f"strategy file {source} does not exist (paths are relative to "
                    f"{config.config_dir})",
                )
        keys_dir = config.cluster.keys_dir
        if (
            keys_dir is not None
            and not self.skip(("cluster", "keys_dir"))
            and not keys_dir.is_dir()
        ):
            self.problem(
                ("cluster", "keys_dir"),
                f"directory {keys_dir} does not exist; make keys with `trader keys`",
            )
        for loc, ref in config.secret_ref_locations():
            if self.skip(loc):
                continue
            try:
                ref.reveal()
            except ConfigError as error:
                if ref.where:
                    self.problems.extend((loc, problem) for problem in error.problems)
                else:
                    path = key_path(loc)
                    self.problems.extend(
                        (loc, f"{self.label}: {path}: {problem}") for problem in error.problems
                    )
