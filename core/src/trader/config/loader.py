"""Read ``trader.toml``: parse, check every key, and report every problem at once.

Loading runs in two passes over the parsed TOML. The first walks the document the way a reader
would: it rejects unknown keys (with a "did you mean" hint), turns secret fields into
:class:`~trader.config.SecretRef` (a literal secret is an error that never repeats the value),
moves plugin options aside, infers defaults that depend on other keys, and checks what spans
tables (an assignment's strategy and exchange exist, ids are unique, allocations fit). The
second validates types and ranges with the pydantic models. Problems from both are sorted into
file order and raised together as one :class:`~trader.errors.ConfigError`.

Tables with problems are then left out and the rest validated again, so :func:`read_config` can
hand a valid configuration of what did parse to the plugin checks
(:mod:`trader.config.check`): a plugin's option problems show beside the file's own, not after
those are fixed.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from pydantic import ValidationError

from trader.config.model import (
    AssignmentConfig,
    ClusterConfig,
    Config,
    RiskConfig,
    StrategyConfig,
    Transport,
    allocation_total,
    assignment_id,
    cluster_problems,
    default_broker,
    default_data_dir,
    display_path,
)
from trader.config.problems import (
    Loc,
    did_you_mean,
    key_path,
    known_fields,
    validation_problems,
)
from trader.config.secrets import (
    SecretRef,
    describe_type,
    is_secret_option,
    reference_problem,
)
from trader.errors import ConfigError, ModelError
from trader.model import Timeframe

if TYPE_CHECKING:
    from trader.plugins import PluginHost

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: A document's keys in file order, nested as its tables and arrays are (no values).
KeyTree = Mapping[str | int, "KeyTree"]

#: The file looked for in the working directory when neither a path nor $TRADER_CONFIG is given.
DEFAULT_FILE_NAME = "trader.toml"

#: Top-level keys, in the order the reference documents them.
SECTIONS: tuple[str, ...] = (
    "data_dir",
    "storage",
    "exchanges",
    "strategies",
    "assignments",
    "risk",
    "schedules",
    "cluster",
)
_STORAGE_KEYS = ("candles", "state", "secret_key")
_EXCHANGE_KEYS = ("plugin", "api_key", "api_secret")
_SCHEDULE_KEYS = ("scheduler", "task", "args", "enabled")
_RUNTIME_BY_SUFFIX = {".lua": "lua", ".py": "python"}
_TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TOML_POSITION = re.compile(r"^(?P<message>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$")


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    host: PluginHost | None = None,
    components: Collection[str] | None = None,
) -> Config:
    """Load and validate a configuration file.

    With ``path`` ``None``: the file ``$TRADER_CONFIG`` names when set, else ``./trader.toml``
    when it exists, else the built-in defaults (:func:`default_config`). ``environ`` replaces
    ``os.environ`` for those variables, for ``$TRADER_HOME`` and for secret references.

    With ``host``, the plugins the file names are checked too: each must be registered in
    ``host`` and its options must pass the plugin's options model. ``components`` limits that to
    the tables it names by key path (``"storage.candles"``; ``"exchanges"`` for all of them);
    ``None`` checks every store, exchange, strategy runtime and scheduler. Their problems are
    reported with the file's own, even when other tables have problems. Secrets are still not
    read (see :func:`trader.config.check.check_file` for everything ``trader config check``
    does).

    Raises :class:`~trader.errors.ConfigError` listing every problem found, in file order, each
    as ``FILE: key.path: what is wrong``; a TOML syntax error names its line and column. Secret
    values never appear in a message.
    """
    report = read_config(path, environ=environ)
    problems = list(report.problems)
    if host is not None:
        from trader.config.check import component_problems

        problems.extend(
            component_problems(report.config, host, skip=report.skipped, components=components)
        )
    if problems:
        raise ConfigError(report.in_file_order(problems))
    return report.config


@dataclass(frozen=True)
class LoadReport:
    """What reading a configuration found: every problem, and a valid configuration of the rest.

    ``problems`` are ``(loc, line)`` pairs in file order, each line ``FILE: key.path: what is
    wrong``. ``config`` is valid even when there are problems: the tables they are in are left
    out of it (or at their defaults) and listed in ``broken``, so later checks can skip them
    instead of checking defaults the file never asked for (a reference from a table that stayed
    into one left out may dangle, so such a ``config`` is for checking, not for running). With no
    problems ``config`` is exactly what :func:`load_config` returns.
    """

    config: Config
    problems: list[tuple[Loc, str]] = field(default_factory=list)
    broken: frozenset[Loc] = frozenset()
    #: The file's keys in file order, nested as its tables are (names only, never values).
    layout: KeyTree = field(default_factory=dict)

    def skipped(self, loc: Loc) -> bool:
        """Whether ``loc`` lies in a table left out of :attr:`config` because of a problem."""
        return any(loc[: len(broken)] == broken for broken in self.broken)

    def in_file_order(self, problems: Iterable[tuple[Loc, str]]) -> list[str]:
        """The lines of ``problems`` sorted by where their keys appear in the file (stable)."""
        return [line for _, line in _in_file_order(self.layout, problems)]


def read_config(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> LoadReport:
    """Read a configuration file as :func:`load_config` does, but report instead of raising.

    Finds the file the same way. Raises :class:`~trader.errors.ConfigError` only when there is
    no configuration to speak of: the file is missing or unreadable, or is not valid TOML.
    """
    env = os.environ if environ is None else environ
    if path is None:
        configured = env.get("TRADER_CONFIG", "").strip()
        if configured:
            path = configured
        elif Path(DEFAULT_FILE_NAME).is_file():
            path = DEFAULT_FILE_NAME
        else:
            return LoadReport(default_config(environ))
    source = Path(path).expanduser().absolute()
    label = display_path(source)
    raw = _read_toml(source, label)
    return _parse(raw, source, environ)


def default_config(environ: Mapping[str, str] | None = None) -> Config:
    """The built-in configuration: SQLite candle and state stores in the data directory.

    The data directory is ``$TRADER_HOME`` when set, else the platform's per-user data
    directory; nothing else is configured (no exchanges, strategies or assignments).
    """
    config = Config(source=None, config_dir=Path.cwd(), data_dir=default_data_dir(environ))
    config._environ = environ
    return config


def parse_config(
    data: Mapping[str, Any],
    *,
    source: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate an already parsed TOML document, as :func:`load_config` does for a file.

    Relative paths resolve against ``source``'s directory (the working directory when
    ``source`` is ``None``). Raises :class:`~trader.errors.ConfigError` with every problem.
    """
    report = _parse(data, source, environ)
    if report.problems:
        raise ConfigError([line for _, line in report.problems])
    return report.config


#: Sections whose sub-tables are checked on their own: a problem in one leaves out that one.
_TABLES = frozenset({"storage", "exchanges", "strategies", "schedules"})
#: Document keys the reader always sets; never left out.
_FIXED = frozenset({"source", "config_dir", "data_dir"})
#: How often leaving out broken tables is retried before falling back to the defaults.
_SALVAGE_ROUNDS = 3


def _parse(
    data: Mapping[str, Any], source: Path | None, environ: Mapping[str, str] | None
) -> LoadReport:
    source = source.absolute() if source is not None else None
    config_dir = source.parent if source is not None else Path.cwd()
    label = display_path(source) if source is not None else "<config>"
    reader = _Reader(label, config_dir, environ)
    document = reader.read(data, source)
    context = {
        "config_dir": config_dir,
        "data_dir": document["data_dir"],
        "environ": environ,
        "cluster_checked": True,
    }
    config: Config | None = None
    try:
        config = Config.model_validate(document, context=context)
    except ValidationError as error:
        for loc, message in validation_problems(error, Config):
            reader.add_validation_problem(loc, message)
    layout = _key_tree(data)
    broken: frozenset[Loc] = frozenset()
    if reader.problems or config is None:
        broken = frozenset(_unit(loc) for loc, _ in reader.problems)
        config, broken = _salvage(document, broken, context)
    config._environ = environ
    lines = [(loc, f"{label}: {_where(loc)}{message}") for loc, message in reader.problems]
    return LoadReport(config, _in_file_order(layout, lines), broken, layout)


def _key_tree(value: Any) -> KeyTree:
    """The keys of a parsed document, nested like its tables and arrays, without the values."""
    if isinstance(value, Mapping):
        return {str(key): _key_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return {index: _key_tree(item) for index, item in enumerate(value)}
    return {}


def _in_file_order(layout: KeyTree, problems: Iterable[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
    """Sort problems by where their keys appear in the file; stable for equal places."""

    def position(problem: tuple[Loc, str]) -> tuple[int, ...]:
        place: list[int] = []
        tree = layout
        for part in problem[0]:
            names = list(tree)
            if isinstance(part, int):
                place.append(part)
            else:
                place.append(names.index(part) if part in names else len(names))
            tree = tree.get(part, {})
        return tuple(place)

    return sorted(problems, key=position)


def _unit(loc: Loc) -> Loc:
    """The table a problem at ``loc`` puts out of use: a component, a section, or the file."""
    if len(loc) >= 2 and loc[0] in _TABLES:
        return loc[:2]
    return loc[:1]


def _salvage(
    document: Mapping[str, Any], broken: frozenset[Loc], context: Mapping[str, Any]
) -> tuple[Config, frozenset[Loc]]:
    """A valid configuration of the document without the ``broken`` tables, and those tables.

    A table the models still refuse joins ``broken`` and the rest is tried again; when that
    does not settle, the result is the built-in defaults with the whole file marked broken.
    """
    for _ in range(_SALVAGE_ROUNDS):
        try:
            return Config.model_validate(_without(document, broken), context=context), broken
        except ValidationError as error:
            more = {_unit(loc) for loc, _ in validation_problems(error, Config)}
            if () in more or more <= broken:
                break
            broken = broken | more
    fallback = Config(
        source=document.get("source"),
        config_dir=document["config_dir"],
        data_dir=document["data_dir"],
    )
    return fallback, frozenset({()})


def _without(document: Mapping[str, Any], broken: frozenset[Loc]) -> dict[str, Any]:
    result = dict(document)
    for unit in broken:
        if len(unit) == 1 and unit[0] not in _FIXED:
            result.pop(str(unit[0]), None)
        elif len(unit) == 2:
            section = result.get(str(unit[0]))
            if isinstance(section, Mapping):
                result[str(unit[0])] = {k: v for k, v in section.items() if k != unit[1]}
    return result


def _where(loc: Loc) -> str:
    path = key_path(loc)
    return f"{path}: " if path else ""


def _read_toml(source: Path, label: str) -> dict[str, Any]:
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [f"{label}: file not found; create one with `trader config init {label}`"]
        ) from None
    except IsADirectoryError:
        raise ConfigError([f"{label}: is a directory, not a configuration file"]) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError([f"{label}: cannot be read: {reason}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            [f"{label}: is not UTF-8 text (invalid byte at offset {error.start})"]
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_syntax_problem(label, error)]) from None


def _syntax_problem(label: str, error: Exception) -> str:
    """``FILE: line L, column C: invalid TOML: reason`` from a TOML decoder error."""
    message = str(error)
    line = getattr(error, "lineno", None)
    column = getattr(error, "colno", None)
    match = _TOML_POSITION.match(message)
    if match is not None:
        message = match.group("message")
        line, column = int(match.group("line")), int(match.group("column"))
    elif message.endswith(" (at end of document)"):
        message = message[: -len(" (at end of document)")]
        return f"{label}: at the end of the file: invalid TOML: {_lower_first(message)}"
    message = str(getattr(error, "msg", message) or message)
    if line is None:
        return f"{label}: invalid TOML: {_lower_first(message)}"
    return f"{label}: line {line}, column {column}: invalid TOML: {_lower_first(message)}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


class _Reader:
    """The first pass: shape the document for the models and find what they cannot."""

    def __init__(self, label: str, config_dir: Path, environ: Mapping[str, str] | None) -> None:
        self.label = label
        self.config_dir = config_dir
        self.environ = environ
        self.problems: list[tuple[Loc, str]] = []
        #: Locations already reported: the models' errors at or below them are dropped.
        self.reported: list[Loc] = []
        self.data_dir_path = default_data_dir(environ)

    # problems -----------------------------------------------------------------------------

    def report(self, loc: Loc, message: str, *, covers: bool = True) -> None:
        """Record a problem; when ``covers``, the models' errors under ``loc`` are redundant."""
        self.problems.append((loc, message))
        if covers:
            self.reported.append(loc)

    def add_validation_problem(self, loc: Loc, message: str) -> None:
        if any(loc[: len(done)] == done for done in self.reported):
            return
        self.problems.append((loc, message))

    # the document -------------------------------------------------------------------------

    def read(self, data: Mapping[str, Any], source: Path | None) -> dict[str, Any]:
        self.data_dir_path = self.data_dir(data)
        for key in data:
            if key not in SECTIONS:
                self.report((key,), f"unknown key{did_you_mean(key, SECTIONS)}")
        document: dict[str, Any] = {
            "source": source,
            "config_dir": self.config_dir,
            "data_dir": self.data_dir_path,
        }
        readers = {
            "storage": self.storage,
            "exchanges": self.exchanges,
            "strategies": self.strategies,
            "assignments": self.assignments,
            "risk": self.risk,
            "schedules": self.schedules,
            "cluster": self.cluster,
        }
        for key, read in readers.items():
            if key in data:
                document[key] = read(data[key])
        self.cross_check(document)
        return document

    def data_dir(self, data: Mapping[str, Any]) -> Path:
        value = data.get("data_dir")
        if value is None:
            return default_data_dir(self.environ)
        if not isinstance(value, str) or not value.strip():
            problem = (
                "must not be empty"
                if isinstance(value, str)
                else f"expected a directory path string, got {describe_type(value)}"
            )
            self.report(("data_dir",), problem)
            return default_data_dir(self.environ)
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.config_dir / path

    def known(
        self, table: Mapping[str, Any], known: tuple[str, ...] | list[str], loc: Loc
    ) -> dict[str, Any]:
        """The table without unknown keys, each of which is reported with a hint."""
        kept: dict[str, Any] = {}
        for key, value in table.items():
            if key in known:
                kept[key] = value
            else:
                self.report((*loc, key), f"unknown key{did_you_mean(key, known)}")
        return kept

    def table_name(self, section: str, name: str) -> None:
        if not _TABLE_NAME.match(name):
            self.report(
                (section, name),
                "invalid name: use letters, digits, _ and - (at most 64, starting with a letter "
                "or digit)",
                covers=False,
            )

    def secret(self, value: Any, loc: Loc) -> Any:
        """A :class:`SecretRef` for reference text; anything else is reported, never quoted."""
        problem = reference_problem(value)
        if problem is not None:
            self.report(loc, problem)
            return value
        return SecretRef.parse(
            value,
            where=f"{self.label}: {key_path(loc)}",
            base_dir=self.config_dir,
            environ=self.environ,
        )

    def options(
        self, table: Mapping[str, Any], loc: Loc, *, secret: bool = False
    ) -> dict[str, Any]:
        """Plugin options: kept as written, except that secret-named values become references."""
        return {
            key: self.option(value, (*loc, key), secret=secret or is_secret_option(key))
            for key, value in table.items()
        }

    def option(self, value: Any, loc: Loc, *, secret: bool) -> Any:
        if isinstance(value, Mapping):
            return self.options(value, loc, secret=secret)
        if isinstance(value, list):
            return [
                self.option(item, (*loc, index), secret=secret) for index, item in enumerate(value)
            ]
        if secret and isinstance(value, str):
            return self.secret(value, loc)
        return value

    def component(self, table: Any, loc: Loc, reserved: tuple[str, ...]) -> Any:
        """Split a component table into its reserved keys and the plugin's ``options``."""
        if not isinstance(table, Mapping):
            return table
        result = {key: table[key] for key in reserved if key in table}
        extra = {key: value for key, value in table.items() if key not in reserved}
        result["options"] = self.options(extra, loc)
        return result

    # sections -----------------------------------------------------------------------------

    def storage(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        table = self.known(value, _STORAGE_KEYS, ("storage",))
        for name in ("candles", "state"):
            if name in table:
                table[name] = self.component(table[name], ("storage", name), ("plugin",))
        if "secret_key" in table:
            table["secret_key"] = self.secret(table["secret_key"], ("storage", "secret_key"))
        return table

    def exchanges(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        result: dict[str, Any] = {}
        for name, table in value.items():
            self.table_name("exchanges", name)
            component = self.component(table, ("exchanges", name), _EXCHANGE_KEYS)
            if isinstance(component, dict):
                if "plugin" not in component:
                    if _PLUGIN_NAME.match(name):
                        component["plugin"] = name
                    else:
                        self.report(
                            ("exchanges", name, "plugin"),
                            "missing, and the table name is not a plugin name; set plugin to "
                            "the exchange plugin's name",
                        )
                for key in ("api_key", "api_secret"):
                    if key in component:
                        component[key] = self.secret(component[key], ("exchanges", name, key))
            result[name] = component
        return result

    def strategies(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        result: dict[str, Any] = {}
        fields = known_fields(StrategyConfig)
        for name, table in value.items():
            self.table_name("strategies", name)
            if not isinstance(table, Mapping):
                result[name] = table
                continue
            strategy = self.known(table, fields, ("strategies", name))
            if "runtime" not in strategy:
                path = strategy.get("path")
                suffix = Path(path).suffix.lower() if isinstance(path, str) else ""
                if suffix in _RUNTIME_BY_SUFFIX:
                    strategy["runtime"] = _RUNTIME_BY_SUFFIX[suffix]
                elif isinstance(path, str):
                    self.report(
                        ("strategies", name, "runtime"),
                        'missing, and the file\'s suffix does not tell: set runtime = "lua", '
                        '"python" or another installed runtime',
                    )
            result[name] = strategy
        return result

    def assignments(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            self.report(
                ("assignments",),
                "expected an array of tables: write [[assignments]], not [assignments]",
            )
            return value
        if not isinstance(value, list):
            return value
        fields = known_fields(AssignmentConfig)
        return [
            self.known(item, fields, ("assignments", index)) if isinstance(item, Mapping) else item
            for index, item in enumerate(value)
        ]

    def risk(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return self.known(value, known_fields(RiskConfig), ("risk",))

    def schedules(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        result: dict[str, Any] = {}
        for name, table in value.items():
            self.table_name("schedules", name)
            result[name] = self.component(table, ("schedules", name), _SCHEDULE_KEYS)
        return result

    def cluster(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        table = self.known(value, known_fields(ClusterConfig), ("cluster",))
        transport = table.get("transport", "inproc")
        broker = table.get("broker", default_broker(transport, self.data_dir_path))
        plaintext = table.get("plaintext_tcp", False)
        keys_dir = table.get("keys_dir")
        if (
            transport in get_args(Transport)
            and isinstance(broker, str)
            and isinstance(plaintext, bool)
            and (keys_dir is None or isinstance(keys_dir, str))
        ):
            for key, message in cluster_problems(
                transport, broker, keys_dir is not None, plaintext
            ):
                self.report(("cluster", key), message, covers=False)
        return table

    # across tables ------------------------------------------------------------------------

    def cross_check(self, document: Mapping[str, Any]) -> None:
        """Check what spans tables: references, unique ids, total allocation per exchange."""
        assignments = document.get("assignments")
        if not isinstance(assignments, list):
            return
        strategies = document.get("strategies")
        exchanges = document.get("exchanges")
        seen: dict[str, int] = {}
        allocations: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for index, item in enumerate(assignments):
            if not isinstance(item, Mapping):
                continue
            loc: Loc = ("assignments", index)
            self.reference(item.get("strategy"), strategies, "strategies", (*loc, "strategy"))
            self.reference(item.get("exchange"), exchanges, "exchanges", (*loc, "exchange"))
            identity = _assignment_identity(item)
            if identity is not None:
                explicit = "id" in item
                first = seen.setdefault(identity, index)
                if first != index:
                    message = (
                        f"duplicate id {identity!r}, already used by assignments[{first}]"
                        if explicit
                        else f"assignments[{first}] already puts this strategy on this market "
                        "and timeframe; give one of them a distinct id"
                    )
                    self.report((*loc, "id") if explicit else loc, message, covers=False)
            exchange = item.get("exchange")
            allocation = item.get("allocation")
            if (
                isinstance(exchange, str)
                and isinstance(allocation, int | float)
                and not isinstance(allocation, bool)
                and 0 < allocation <= 1
                and item.get("enabled", True) is not False
            ):
                allocations[exchange].append((index, allocation))
        for exchange, shares in allocations.items():
            total = allocation_total([share for _, share in shares])
            if total > Decimal(1):
                which = ", ".join(f"assignments[{index}]" for index, _ in shares)
                self.report(
                    ("assignments",),
                    f"the allocations on exchange {exchange!r} add up to {total} ({which}); "
                    "the total per exchange must not exceed 1",
                    covers=False,
                )

    def reference(self, value: Any, tables: Any, section: str, loc: Loc) -> None:
        if not isinstance(value, str) or not value:
            return
        names = list(tables) if isinstance(tables, Mapping) else []
        if value in names:
            return
        hint = did_you_mean(value, names)
        defined = ", ".join(names) if names else "none"
        self.report(
            loc,
            f"no [{section}.{value}] table is defined (defined: {defined}){hint}",
            covers=False,
        )


def _assignment_identity(item: Mapping[str, Any]) -> str | None:
    explicit = item.get("id")
    if "id" in item:
        return explicit if isinstance(explicit, str) and explicit else None
    parts = [item.get(key) for key in ("strategy", "exchange", "symbol", "timeframe")]
    if not all(isinstance(part, str) for part in parts):
        return None
    strategy, exchange, symbol, timeframe = (str(part) for part in parts)
    with contextlib.suppress(ModelError):
        timeframe = str(Timeframe.parse(timeframe))
    return assignment_id(strategy, exchange, symbol, timeframe)
