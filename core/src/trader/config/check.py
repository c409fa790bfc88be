"""``trader config check``: does the installation provide everything the file names?"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trader.config.model import ComponentConfig, Config
from trader.config.options import validate_options
from trader.config.problems import Loc, key_path
from trader.errors import CapabilityNotFound, ConfigError
from trader.registry import Kind, Registration

if TYPE_CHECKING:
    from trader.plugins import PluginHost


def check_config(config: Config, host: PluginHost) -> list[str]:
    """Every problem that stops ``config`` from running with the plugins ``host`` loaded.

    Checks that every capability the file names is registered (candle and state stores,
    exchanges, strategy runtimes, schedulers), suggesting the distribution to install when one
    is not; validates each component's options with its plugin's options model; checks that
    strategy files and the CURVE keys directory exist; and reads every secret reference, so a
    missing variable or file shows now rather than at start-up (values are never shown).
    Each problem is ``FILE: key.path: what is wrong``. An empty list means all is well.
    """
    return _Checker(config, host).run()


class _Checker:
    def __init__(self, config: Config, host: PluginHost) -> None:
        self.config = config
        self.host = host
        self.label = config.label
        self.problems: list[str] = []

    def problem(self, loc: Loc, message: str) -> None:
        path = key_path(loc)
        self.problems.append(
            f"{self.label}: {path}: {message}" if path else f"{self.label}: {message}"
        )

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
            self.problems.extend(error.problems)

    def component(self, kind: Kind, component: ComponentConfig, loc: Loc) -> None:
        registration = self.capability(kind, component.plugin, (*loc, "plugin"))
        if registration is not None:
            self.options(registration, component.plugin_options(), loc, ("plugin",))

    def run(self) -> list[str]:
        config = self.config
        self.component(Kind.CANDLE_STORE, config.storage.candles, ("storage", "candles"))
        self.component(Kind.STATE_STORE, config.storage.state, ("storage", "state"))
        for name, exchange in config.exchanges.items():
            registration = self.capability(Kind.EXCHANGE, exchange.plugin, ("exchanges", name))
            if registration is not None:
                self.options(
                    registration, exchange.plugin_options(), ("exchanges", name), ("plugin",)
                )
        for name, strategy in config.strategies.items():
            self.capability(
                Kind.STRATEGY_RUNTIME, strategy.runtime, ("strategies", name, "runtime")
            )
            source = config.resolve_path(strategy.path)
            if not source.is_file():
                self.problem(
                    ("strategies", name, "path"),
                    f"strategy file {source} does not exist (paths are relative to "
                    f"{config.config_dir})",
                )
        for name, schedule in config.schedules.items():
            loc: Loc = ("schedules", name)
            registration = self.capability(Kind.SCHEDULER, schedule.scheduler, (*loc, "scheduler"))
            if registration is not None:
                self.options(
                    registration,
                    schedule.plugin_options(),
                    loc,
                    ("scheduler", "task", "args", "enabled"),
                )
        keys_dir = config.cluster.keys_dir
        if keys_dir is not None and not keys_dir.is_dir():
            self.problem(
                ("cluster", "keys_dir"),
                f"directory {keys_dir} does not exist; make keys with `trader keys`",
            )
        for path, ref in config.secret_refs():
            try:
                ref.reveal()
            except ConfigError as error:
                if ref.where:
                    self.problems.extend(error.problems)
                else:
                    self.problems.extend(f"{self.label}: {path}: {p}" for p in error.problems)
        return self.problems
