"""The validated configuration: what ``trader.toml`` holds once :func:`load_config` accepts it.

Every model is frozen and strict: TOML values are typed, so ``workers = "4"`` is a mistake to
report, not a string to coerce. Unknown keys are errors. Component tables (stores, exchanges,
schedules) keep the keys the core does not know in ``options``, which the component's plugin
validates (``trader config check``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trader.config.problems import config_problem, config_problems, key_path
from trader.config.secrets import SecretRef, describe_type
from trader.errors import ModelError
from trader.interfaces import PluginContext
from trader.model import Timeframe, parse_symbol

_PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: Longest ``ipc://`` socket path the operating systems we run on accept (sun_path, minus NUL).
MAX_IPC_PATH = 103


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$TRADER_HOME`` when set, else the platform's per-user data directory for trader."""
    env = os.environ if environ is None else environ
    home = env.get("TRADER_HOME", "").strip()
    if home:
        return Path(home).expanduser().absolute()
    return Path(platformdirs.user_data_dir("trader")).absolute()


def _plugin_name(value: str) -> str:
    if not _PLUGIN_NAME.match(value):
        raise config_problem(
            f"{value!r} is not a plugin name: use lower case letters, digits and _, starting "
            "with a letter (such as sqlite)"
        )
    return value


PluginName = Annotated[str, AfterValidator(_plugin_name)]


def _timeframe(value: object) -> Timeframe:
    if isinstance(value, Timeframe):
        return value
    if not isinstance(value, str):
        raise config_problem(
            f'expected a timeframe string such as "1h", got {describe_type(value)}'
        )
    try:
        return Timeframe.parse(value)
    except ModelError as error:
        raise config_problem(str(error)) from None


#: A timeframe written as text (``"1h"``) and held as :class:`~trader.model.Timeframe`.
TimeframeField = Annotated[
    Timeframe, PlainValidator(_timeframe), PlainSerializer(str, return_type=str)
]


class Section(BaseModel):
    """Base of every configuration model: frozen, strict, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ComponentConfig(Section):
    """A component chosen by plugin name, with the plugin's own options.

    In TOML the options are the table's other keys::

        [storage.candles]
        plugin = "sqlite"
        path = "candles.sqlite"
    """

    plugin: PluginName = "sqlite"
    """The registered name of the plugin capability to use."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The plugin's options, validated by the plugin's options model (``trader config check``)."""

    def plugin_options(self) -> dict[str, Any]:
        """The options to hand the plugin's factory (validated by ``validate_options``)."""
        return dict(self.options)


class ExchangeConfig(ComponentConfig):
    """One trading account on one exchange: ``[exchanges.<name>]``.

    ``plugin`` defaults to the table's name, so ``[exchanges.bitfinex]`` uses the ``bitfinex``
    exchange plugin; a second account on the same exchange sets ``plugin`` explicitly.
    """

    plugin: PluginName
    api_key: SecretRef | None = None
    """Reference to the API key (``${ENV}`` or ``file:PATH``)."""
    api_secret: SecretRef | None = None
    """Reference to the API secret (``${ENV}`` or ``file:PATH``)."""

    def plugin_options(self) -> dict[str, Any]:
        """The options plus ``api_key`` and ``api_secret`` (as references) when they are set."""
        options = dict(self.options)
        if self.api_key is not None:
            options["api_key"] = self.api_key
        if self.api_secret is not None:
            options["api_secret"] = self.api_secret
        return options


class StorageConfig(Section):
    """``[storage]``: where candles and application state live, and the at-rest secret key."""

    candles: ComponentConfig = Field(default_factory=ComponentConfig)
    state: ComponentConfig = Field(default_factory=ComponentConfig)
    secret_key: SecretRef | None = None
    """Reference to the key that encrypts secrets stored at rest (trading-account credentials)."""


class StrategyConfig(Section):
    """``[strategies.<name>]``: a strategy's source file, its language and default parameters."""

    runtime: PluginName
    """The strategy runtime (``lua``, ``python``...); the loader infers it from ``.lua``/``.py``."""
    path: str = Field(min_length=1)
    """The source file, relative to the configuration file's directory."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Default parameters; an assignment's ``params`` override them key by key."""
    trusted: bool = False
    """Trusted code may use faster, less isolated execution (such as LuaJIT)."""


def assignment_id(strategy: str, exchange: str, symbol: str, timeframe: str) -> str:
    """The id an assignment gets when the file gives none: ``strategy@exchange:SYMBOL:tf``."""
    return f"{strategy}@{exchange}:{symbol}:{timeframe}"


class AssignmentConfig(Section):
    """``[[assignments]]``: a strategy put to work on one market of one exchange account."""

    id: str = Field(min_length=1)
    """Unique id; defaults to ``strategy@exchange:SYMBOL:timeframe``."""
    strategy: str = Field(min_length=1)
    """A table name under ``[strategies]``."""
    exchange: str = Field(min_length=1)
    """A table name under ``[exchanges]``."""
    symbol: str
    """A unified ``BASE/QUOTE`` symbol such as ``BTC/USD``."""
    timeframe: TimeframeField
    allocation: float = Field(gt=0, le=1)
    """The share of the account's capital this assignment trades with, in (0, 1]."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Parameter overrides on top of the strategy's ``params``."""
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "id" in data:
            return data
        parts = [data.get(key) for key in ("strategy", "exchange", "symbol", "timeframe")]
        if not all(isinstance(part, str) for part in parts):
            return data
        strategy, exchange, symbol, timeframe = (str(part) for part in parts)
        with contextlib.suppress(ModelError):
            timeframe = str(Timeframe.parse(timeframe))
        return {**data, "id": assignment_id(strategy, exchange, symbol, timeframe)}

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        try:
            parse_symbol(value)
        except ModelError as error:
            raise config_problem(str(error)) from None
        return value


class RiskConfig(Section):
    """``[risk]``: safeguards the broker enforces on every order, whatever a strategy wants."""

    max_orders_per_minute: int = Field(default=60, gt=0)
    """Orders submitted per minute across all assignments; more are refused."""
    max_open_orders: int = Field(default=100, gt=0)
    """Orders open at once across all assignments; more are refused."""
    max_position_fraction: float = Field(default=1.0, gt=0, le=1)
    """Largest position in one market, as a fraction of the account's equity."""
    max_daily_loss_fraction: float | None = Field(default=None, gt=0, le=1)
    """Stop opening positions for the day once this fraction of equity is lost (unset: no limit)."""
    kill_switch: bool = False
    """When true no new orders are placed at all; cancelling stays possible."""
    quarantine_after_errors: int = Field(default=5, gt=0)
    """Consecutive errors after which a worker is quarantined and its assignments paused."""


class ScheduleConfig(Section):
    """``[schedules.<name>]``: run a task whenever a scheduler fires.

    The table's other keys are the scheduler's options (``every = "5m"``, ``cron = "0 * * * *"``).
    """

    scheduler: PluginName
    """The registered scheduler: ``interval``, ``cron``, ``candle_close`` or a plugin's."""
    task: str = Field(min_length=1)
    """The task to run, such as ``report.daily``."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Arguments handed to the task."""
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
    """The scheduler's options, validated by the scheduler plugin's options model."""

    def plugin_options(self) -> dict[str, Any]:
        """The options to hand the scheduler's factory."""
        return dict(self.options)


Transport = Literal["inproc", "ipc", "tcp"]


class ClusterConfig(Section):
    """``[cluster]``: how the services talk (ARCHITECTURE §6) and how many workers run locally.

    TCP is encrypted with CURVE keys from ``keys_dir``. Without keys, TCP is refused unless
    ``plaintext_tcp = true``, and even then only on a loopback address.
    """

    transport: Transport = "inproc"
    broker: str = ""
    """The broker's address; defaults by transport (``inproc://trader-broker``,
    ``ipc://DATA_DIR/broker.ipc``, ``tcp://127.0.0.1:5555``)."""
    workers: int = Field(default=2, ge=0)
    """Worker processes the broker starts on this host (0: only remote workers)."""
    plaintext_tcp: bool = False
    """Allow unencrypted TCP on loopback addresses (for tests; never across hosts)."""
    keys_dir: Path | None = None
    """Directory of CURVE key pairs made by ``trader keys``; relative to the file's directory."""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        context = info.context if isinstance(info.context, Mapping) else {}
        result = dict(data)
        keys_dir = result.get("keys_dir")
        if isinstance(keys_dir, str):
            path = Path(keys_dir).expanduser()
            base = context.get("config_dir")
            if not path.is_absolute() and isinstance(base, Path):
                path = base / path
            result["keys_dir"] = path
        if "broker" not in result:
            data_dir = context.get("data_dir")
            result["broker"] = default_broker(
                result.get("transport", "inproc"),
                data_dir if isinstance(data_dir, Path) else default_data_dir(),
            )
        return result

    @model_validator(mode="after")
    def _secure(self, info: ValidationInfo) -> ClusterConfig:
        if isinstance(info.context, Mapping) and info.context.get("cluster_checked"):
            return self  # the loader checked the raw table already, with every other problem
        problems = cluster_problems(
            self.transport, self.broker, self.keys_dir is not None, self.plaintext_tcp
        )
        if problems:
            raise config_problems(problems)
        return self


def default_broker(transport: object, data_dir: Path) -> str:
    """The broker address a transport uses when ``broker`` is not set."""
    if transport == "ipc":
        return f"ipc://{data_dir / 'broker.ipc'}"
    if transport == "tcp":
        return "tcp://127.0.0.1:5555"
    return "inproc://trader-broker"


def cluster_problems(
    transport: str, broker: str, has_keys: bool, plaintext_tcp: bool
) -> list[tuple[str, str]]:
    """Every problem with a cluster's addresses and security, as ``(key, message)``."""
    problems: list[tuple[str, str]] = []
    scheme, sep, rest = broker.partition("://")
    if not sep or scheme != transport:
        example = {
            "inproc": "inproc://trader-broker",
            "ipc": "ipc:///run/trader/broker.ipc",
            "tcp": "tcp://10.0.0.5:5555",
        }[transport]
        problems.append(
            (
                "broker",
                f"{broker!r} is not an address for transport {transport!r}; write one such as "
                f"{example}",
            )
        )
    elif transport == "tcp":
        host, port = _split_host_port(rest)
        if host is None or port is None:
            problems.append(("broker", f"{broker!r} is not tcp://HOST:PORT (port 1 to 65535)"))
        elif not has_keys and not _is_loopback(host):
            problems.append(
                (
                    "broker",
                    f"tcp address {host} is not loopback, so it needs CURVE keys: set keys_dir "
                    "(make keys with `trader keys`); plaintext is only allowed on loopback",
                )
            )
    elif transport == "ipc":
        if not rest:
            problems.append(("broker", "an ipc address needs a path, such as ipc:///run/t.ipc"))
        elif len(rest.encode()) > MAX_IPC_PATH:
            problems.append(
                (
                    "broker",
                    f"the ipc socket path is {len(rest.encode())} bytes long; the operating "
                    f"system allows {MAX_IPC_PATH}: set a shorter broker address",
                )
            )
    elif not rest:
        problems.append(("broker", "an inproc address needs a name, such as inproc://trader"))
    if transport == "tcp" and not has_keys and not plaintext_tcp:
        problems.append(
            (
                "transport",
                "tcp needs CURVE keys: set keys_dir (make keys with `trader keys`), or set "
                "plaintext_tcp = true to allow unencrypted loopback traffic",
            )
        )
    return problems


def _split_host_port(rest: str) -> tuple[str | None, int | None]:
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        return None, None
    port = int(port_text)
    if not 0 < port < 65536:
        return None, None
    return host.strip("[]"), port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Config(Section):
    """The whole configuration; build it with :func:`~trader.config.load_config`.

    ``source`` is the file it came from (``None`` for the built-in defaults), ``config_dir`` the
    directory relative paths are resolved against, ``data_dir`` where components keep files.
    """

    source: Path | None = None
    config_dir: Path = Field(default_factory=lambda: Path.cwd())
    data_dir: Path = Field(default_factory=default_data_dir)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    exchanges: dict[str, ExchangeConfig] = Field(default_factory=dict)
    strategies: dict[str, StrategyConfig] = Field(default_factory=dict)
    assignments: list[AssignmentConfig] = Field(default_factory=list)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    schedules: dict[str, ScheduleConfig] = Field(default_factory=dict)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    _environ: Mapping[str, str] | None = PrivateAttr(default=None)

    @property
    def label(self) -> str:
        """How messages name this configuration: its file (relative to the working directory
        when inside it), or ``defaults`` when there is none."""
        return display_path(self.source) if self.source is not None else "defaults"

    @property
    def environ(self) -> Mapping[str, str] | None:
        """The environment the configuration was loaded with (``None``: ``os.environ``)."""
        return self._environ

    def resolve_path(self, path: str | Path) -> Path:
        """Resolve ``path`` against :attr:`config_dir` (``~`` expanded); absolute paths stay."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.config_dir / candidate

    def context(self) -> PluginContext:
        """The context handed to every component's factory.

        ``settings["secret_key"]`` holds the revealed ``[storage] secret_key`` when one is
        configured (absent otherwise); revealing it may raise
        :class:`~trader.errors.ConfigError` when its variable or file is missing.
        """
        settings: dict[str, Any] = {}
        if self.storage.secret_key is not None:
            settings["secret_key"] = self.storage.secret_key.reveal()
        return PluginContext(data_dir=self.data_dir, config_dir=self.config_dir, settings=settings)

    def params_for(self, assignment: AssignmentConfig) -> dict[str, Any]:
        """The strategy's ``params`` overridden by the assignment's, key by key."""
        strategy = self.strategies.get(assignment.strategy)
        base = dict(strategy.params) if strategy is not None else {}
        return {**base, **assignment.params}

    def secret_refs(self) -> list[tuple[str, SecretRef]]:
        """Every secret reference in the configuration with its key path."""
        return [(key_path(loc), ref) for loc, ref in self.secret_ref_locations()]

    def secret_ref_locations(self) -> list[tuple[tuple[str | int, ...], SecretRef]]:
        """Every secret reference with its location as a key tuple, such as ``("storage", "x")``."""
        found: list[tuple[tuple[str | int, ...], SecretRef]] = []
        if self.storage.secret_key is not None:
            found.append((("storage", "secret_key"), self.storage.secret_key))
        for name, component in (("candles", self.storage.candles), ("state", self.storage.state)):
            found.extend(_refs_in(component.options, ("storage", name)))
        for name, exchange in self.exchanges.items():
            found.extend(_refs_in(exchange.plugin_options(), ("exchanges", name)))
        for name, schedule in self.schedules.items():
            found.extend(_refs_in(schedule.options, ("schedules", name)))
        return found


def allocation_total(allocations: list[float]) -> Decimal:
    """Sum allocations exactly as written (``0.1 + 0.2 + 0.7`` is 1, not a hair above)."""
    return sum((Decimal(str(value)) for value in allocations), Decimal(0))


def _refs_in(
    value: Any, loc: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], SecretRef]]:
    if isinstance(value, SecretRef):
        return [(loc, value)]
    if isinstance(value, Mapping):
        return [ref for key, item in value.items() for ref in _refs_in(item, (*loc, str(key)))]
    if isinstance(value, list):
        return [ref for index, item in enumerate(value) for ref in _refs_in(item, (*loc, index))]
    return []


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it, else as it is."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
