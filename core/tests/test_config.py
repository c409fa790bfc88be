"""Configuration: loading, validation with every problem at once, secret references, checks."""

from __future__ import annotations

import os
import re
import string
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from trader.config import (
    SECTIONS,
    STARTER_TOML,
    AssignmentConfig,
    ClusterConfig,
    Config,
    ExchangeConfig,
    RiskConfig,
    ScheduleConfig,
    SecretRef,
    StorageConfig,
    StrategyConfig,
    check_config,
    default_config,
    load_config,
    parse_config,
    validate_options,
)
from trader.config.check import check_file
from trader.errors import ConfigError
from trader.model import Timeframe
from trader.plugins import PluginHost, get_plugin_manager
from trader.registry import Kind, Registration


def write(directory: Path, text: str, name: str = "trader.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, **kwargs)
    return caught.value.problems


def uncomment_examples(text: str) -> str:
    """Switch on the starter file's examples: ``#key`` and ``#[table]`` lines."""
    return re.sub(r"(?m)^#(?=[\[a-z])", "", text)


# --- the acceptance test ------------------------------------------------------------------


def test_five_different_mistakes_yield_five_messages_each_naming_its_key_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        """
        [exchanges.bitfinex]
        api_key = "${BITFINEX_API_KEY}"
        api_secret = "hunter2-very-secret"

        [strategies.sma]
        path = "sma.lua"

        [[assignments]]
        strategy = "smaa"
        exchange = "bitfinex"
        symbol = "btcusd"
        timeframe = "1h"
        allocation = 0.5

        [risk]
        max_order_per_minute = 10

        [cluster]
        workers = "four"
        """,
    )

    problems = problems_of(Path("trader.toml"))

    assert len(problems) == 5, problems
    expected = [
        "trader.toml: exchanges.bitfinex.api_secret: literal secrets are not allowed",
        "trader.toml: assignments[0].strategy: no [strategies.smaa] table",
        "trader.toml: assignments[0].symbol: invalid symbol 'btcusd'",
        "trader.toml: risk.max_order_per_minute: unknown key; did you mean max_orders_per_minute?",
        "trader.toml: cluster.workers: expected an integer, got a string",
    ]
    for problem, start in zip(sorted(problems), sorted(expected), strict=True):
        assert problem.startswith(start), (problem, start)
    assert "did you mean sma?" in " ".join(problems)
    assert "hunter2" not in " ".join(problems)


# --- finding the file ---------------------------------------------------------------------


def trader_home() -> Path:
    """The fresh TRADER_HOME the root conftest gives every test."""
    return Path(os.environ["TRADER_HOME"])


def test_no_file_anywhere_gives_the_embedded_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.source is None
    assert config.data_dir == trader_home()
    assert config.storage.candles.plugin == "sqlite"
    assert config.storage.state.plugin == "sqlite"
    assert config.storage.candles.options == {}
    assert config.exchanges == {} and config.assignments == []
    assert config.cluster.transport == "inproc"
    assert config == default_config()


def test_trader_toml_in_the_working_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, 'data_dir = "here"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.source == tmp_path / "trader.toml"
    assert config.data_dir == tmp_path / "here"


def test_trader_config_variable_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "elsewhere"\n', name="custom.toml")
    config = load_config(environ={"TRADER_CONFIG": str(path)})
    assert config.source == path
    assert config.data_dir == tmp_path / "elsewhere"


def test_a_missing_file_is_one_problem_that_says_how_to_make_one(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "absent.toml")
    assert "absent.toml: file not found" in problem
    assert "trader config init" in problem


def test_toml_syntax_errors_name_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "data"\nrisk = = 3\n')
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: line 2, column 8: invalid TOML: ")


def test_data_dir_resolves_against_the_file_and_defaults_to_trader_home(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).data_dir == trader_home()
    assert load_config(write(tmp_path, 'data_dir = "d"\n')).data_dir == tmp_path / "d"
    absolute = tmp_path / "abs"
    assert load_config(write(tmp_path, f'data_dir = "{absolute}"\n')).data_dir == absolute
    config = load_config(write(tmp_path, ""), environ={"TRADER_HOME": str(tmp_path / "h")})
    assert config.data_dir == tmp_path / "h"


# --- the starter file ---------------------------------------------------------------------


def test_the_starter_file_loads_cleanly_as_the_built_in_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, STARTER_TOML))
    # data_dir is left at its default, so candles already stored there stay in view.
    assert config.data_dir == trader_home()
    assert config.data_dir == default_config().data_dir
    assert re.search(r"(?m)^data_dir", STARTER_TOML) is None
    assert re.search(r"(?m)^#data_dir = ", STARTER_TOML) is not None
    assert config.storage.candles.plugin == "sqlite"
    assert config.risk.kill_switch is False
    assert config.exchanges == {}


def test_the_starter_files_examples_are_valid_once_uncommented(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, uncomment_examples(STARTER_TOML)))
    assert config.data_dir == tmp_path / "data"
    assert set(config.exchanges) == {"bitfinex", "bitfinex_savings"}
    assert config.exchanges["bitfinex_savings"].plugin == "bitfinex"
    assert config.strategies["sma_cross"].runtime == "lua"
    (assignment,) = config.assignments
    assert assignment.id == "sma_cross@bitfinex:BTC/USD:1h"
    assert config.params_for(assignment) == {"fast": 10, "slow": 50}
    assert config.schedules["daily_report"].options["timezone"] == "Europe/London"
    assert str(config.storage.secret_key) == "${TRADER_SECRET_KEY}"


def test_the_starter_files_examples_pass_the_builtin_plugins_checks(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, uncomment_examples(STARTER_TOML)))
    problems = check_config(config, get_plugin_manager())
    # Only what a fresh machine lacks may be missing: exchange and runtime plugins, the
    # strategy file, the secrets, the CURVE keys. The built-in stores and schedulers accept
    # their examples.
    assert problems
    for problem in problems:
        place = problem.split(": ")[1]
        assert place.startswith(
            ("exchanges.", "strategies.", "storage.secret_key", "cluster.keys_dir")
        ), problem


# --- unknown keys and types ---------------------------------------------------------------


def test_unknown_keys_are_errors_with_a_hint(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        data_dri = "x"
        [strategies.sma]
        path = "sma.lua"
        tusted = true
        [cluster]
        transprt = "ipc"
        [storage]
        candels = { plugin = "sqlite" }
        """,
    )
    problems = problems_of(path)
    assert sorted(problem.split(": ", 1)[1] for problem in problems) == [
        "cluster.transprt: unknown key; did you mean transport?",
        "data_dri: unknown key; did you mean data_dir?",
        "storage.candels: unknown key; did you mean candles?",
        "strategies.sma.tusted: unknown key; did you mean trusted?",
    ]


def test_types_are_strict_and_messages_name_types_not_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [risk]
        kill_switch = "yes"
        max_position_fraction = 1.5
        [cluster]
        transport = "carrier-pigeon"
        """,
    )
    problems = problems_of(path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "risk.kill_switch: expected true or false, got a string",
        "risk.max_position_fraction: must be less than or equal to 1",
        "cluster.transport: must be one of 'inproc', 'ipc' or 'tcp'",
    ]


def test_a_single_assignments_table_is_told_to_use_double_brackets(tmp_path: Path) -> None:
    path = write(tmp_path, '[assignments]\nstrategy = "x"\n')
    (problem,) = problems_of(path)
    assert "assignments: expected an array of tables: write [[assignments]]" in problem


def test_component_tables_keep_their_other_keys_as_plugin_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [storage.candles]
        plugin = "timescale"
        dsn = "postgresql://trader@db/trader"
        password = "${PG_PASSWORD}"
        pool = { size = 4 }
        """,
    )
    candles = load_config(path).storage.candles
    assert candles.plugin == "timescale"
    assert candles.options["dsn"] == "postgresql://trader@db/trader"
    assert candles.options["pool"] == {"size": 4}
    assert candles.options["password"] == SecretRef("env", "PG_PASSWORD")


def test_plugin_names_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, '[storage.state]\nplugin = "My-Store"\n')
    (problem,) = problems_of(path)
    assert "storage.state.plugin: 'My-Store' is not a plugin name" in problem


# --- exchanges, strategies, assignments ---------------------------------------------------


def test_exchange_plugin_defaults_to_the_table_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [exchanges.bitfinex]
        [exchanges.savings]
        plugin = "bitfinex"
        api_key = "${K}"
        api_secret = "file:bfx.secret"
        """,
    )
    exchanges = load_config(path).exchanges
    assert exchanges["bitfinex"].plugin == "bitfinex"
    assert exchanges["savings"].plugin == "bitfinex"
    options = exchanges["savings"].plugin_options()
    assert set(options) == {"api_key", "api_secret"}
    assert exchanges["savings"].api_secret is not None
    assert exchanges["savings"].api_secret.path == tmp_path / "bfx.secret"


def test_strategy_runtime_is_inferred_from_the_suffix_or_asked_for(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [strategies.a]
        path = "a.lua"
        [strategies.b]
        path = "b.py"
        [strategies.c]
        path = "c.txt"
        """,
    )
    (problem,) = problems_of(path)
    assert "strategies.c.runtime: missing" in problem
    fixed = write(tmp_path, '[strategies.a]\npath = "a.lua"\n[strategies.b]\npath = "b.py"\n')
    strategies = load_config(fixed).strategies
    assert (strategies["a"].runtime, strategies["b"].runtime) == ("lua", "python")


ASSIGNMENT_BASE = """
[exchanges.paper]
[strategies.sma]
path = "sma.lua"
params = { fast = 5 }
"""


def assignment(**fields: Any) -> str:
    values = {
        "strategy": "sma",
        "exchange": "paper",
        "symbol": "BTC/USD",
        "timeframe": "1h",
        "allocation": 0.5,
    }
    values.update(fields)
    body = "\n".join(f"{key} = {_toml(value)}" for key, value in values.items())
    return f"\n[[assignments]]\n{body}\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return repr(value)


def test_assignments_get_ids_parsed_timeframes_and_merged_params(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        ASSIGNMENT_BASE
        + assignment(timeframe="1D", params={"slow": 20})
        + assignment(id="eth", symbol="ETH/USD", allocation=0.25),
    )
    config = load_config(path)
    first, second = config.assignments
    assert first.id == "sma@paper:BTC/USD:1d"
    assert first.timeframe == Timeframe.parse("1d")
    assert config.params_for(first) == {"fast": 5, "slow": 20}
    assert second.id == "eth"
    assert first.model_dump()["timeframe"] == "1d"


def test_assignment_mistakes_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        ASSIGNMENT_BASE
        + assignment(exchange="paperr", timeframe="7m")
        + assignment(allocation=0)
        + assignment(id="x", strategy="nope", unknown=1)
        + assignment(id="x", symbol="tBTCUSD", allocation=0.2),
    )
    problems = [p.split(": ", 1)[1] for p in problems_of(path)]
    assert problems == [
        "assignments[0].exchange: no [exchanges.paperr] table is defined (defined: paper); "
        "did you mean paper?",
        "assignments[0].timeframe: invalid timeframe '7m': a minute timeframe must be one of "
        "1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 minutes so candles tile evenly",
        "assignments[1].allocation: must be greater than 0",
        "assignments[2].strategy: no [strategies.nope] table is defined (defined: sma)",
        "assignments[2].unknown: unknown key",
        "assignments[3].symbol: invalid symbol 'tBTCUSD': expected BASE/QUOTE in upper case, "
        "such as BTC/USD",
        "assignments[3].id: duplicate id 'x', already used by assignments[2]",
    ]


def test_allocations_per_exchange_may_add_up_to_exactly_one_but_not_more(
    tmp_path: Path,
) -> None:
    exact = ASSIGNMENT_BASE + "".join(
        assignment(id=str(share), allocation=share) for share in (0.1, 0.2, 0.7)
    )
    assert len(load_config(write(tmp_path, exact)).assignments) == 3
    disabled = exact + assignment(id="off", allocation=0.5, enabled=False)
    assert len(load_config(write(tmp_path, disabled)).assignments) == 4
    over = exact + assignment(id="more", allocation=0.05)
    (problem,) = problems_of(write(tmp_path, over))
    assert "the allocations on exchange 'paper' add up to 1.05" in problem
    same_market_twice = ASSIGNMENT_BASE + assignment(allocation=0.1) + assignment(allocation=0.1)
    (problem,) = problems_of(write(tmp_path, same_market_twice))
    assert "assignments[1]: assignments[0] already puts this strategy on this market" in problem


# --- the cluster --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('transport = "tcp"', ["cluster.transport: tcp needs CURVE keys"]),
        ('transport = "tcp"\nplaintext_tcp = true', []),
        (
            'transport = "tcp"\nplaintext_tcp = true\nbroker = "tcp://10.1.2.3:5555"',
            ["cluster.broker: tcp address 10.1.2.3 is not loopback, so it needs CURVE keys"],
        ),
        ('transport = "tcp"\nbroker = "tcp://*:5555"\nkeys_dir = "keys"', []),
        ('transport = "tcp"\nplaintext_tcp = true\nbroker = "tcp://[::1]:5555"', []),
        (
            'transport = "tcp"\nplaintext_tcp = true\nbroker = "tcp://localhost:0"',
            ["cluster.broker: 'tcp://localhost:0' is not tcp://HOST:PORT"],
        ),
        (
            'transport = "ipc"\nbroker = "inproc://x"',
            ["cluster.broker: 'inproc://x' is not an address for transport 'ipc'"],
        ),
        ('transport = "ipc"', []),
    ],
)
def test_cluster_addresses_and_tcp_security(
    tmp_path: Path, table: str, expected: list[str]
) -> None:
    path = write(tmp_path, f"[cluster]\n{table}\n")
    if not expected:
        load_config(path)
        return
    problems = [p.split(": ", 1)[1] for p in problems_of(path)]
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem


def test_cluster_defaults_and_keys_dir_resolution(tmp_path: Path) -> None:
    path = write(tmp_path, '[cluster]\ntransport = "ipc"\nkeys_dir = "keys"\nworkers = 0\n')
    cluster = load_config(path).cluster
    assert cluster.broker == f"ipc://{load_config(path).data_dir / 'broker.ipc'}"
    assert cluster.keys_dir == tmp_path / "keys"
    assert cluster.workers == 0


def test_cluster_security_holds_when_built_directly() -> None:
    with pytest.raises(ValidationError, match="tcp needs CURVE keys"):
        ClusterConfig(transport="tcp")
    assert ClusterConfig(transport="tcp", plaintext_tcp=True).broker == "tcp://127.0.0.1:5555"


def test_cluster_security_problems_show_beside_type_problems(tmp_path: Path) -> None:
    path = write(tmp_path, '[cluster]\ntransport = "tcp"\nworkers = "2"\n')
    problems = [p.split(": ", 1)[1] for p in problems_of(path)]
    assert len(problems) == 2
    assert problems[0].startswith("cluster.transport: tcp needs CURVE keys")
    assert problems[1] == "cluster.workers: expected an integer, got a string"


# --- secrets ------------------------------------------------------------------------------


def test_secret_references_are_read_when_revealed_not_when_loaded(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    (tmp_path / "secret.txt").write_text("from-a-file\n")
    path = write(
        tmp_path,
        """
        [storage]
        secret_key = "${TRADER_SECRET_KEY}"
        [exchanges.bitfinex]
        api_key = "${BFX_KEY}"
        api_secret = "file:secret.txt"
        """,
    )
    config = load_config(path, environ=environ)
    exchange = config.exchanges["bitfinex"]
    assert exchange.api_key is not None and exchange.api_secret is not None
    with pytest.raises(ConfigError) as caught:
        exchange.api_key.reveal()
    assert caught.value.problems == [
        f"{path}: exchanges.bitfinex.api_key: environment variable BFX_KEY is not set"
    ]
    environ["BFX_KEY"] = "  key-value  "
    assert exchange.api_key.reveal() == "key-value"
    assert exchange.api_secret.reveal() == "from-a-file"
    environ["TRADER_SECRET_KEY"] = "at-rest"
    assert config.context().settings == {"secret_key": "at-rest"}
    assert config.context().config_dir == tmp_path


def test_a_missing_secret_file_names_the_key_and_file_but_no_value(tmp_path: Path) -> None:
    ref = SecretRef.parse("file:nope.secret", where="t.toml: x.password", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"t\.toml: x\.password: secret file .*nope\.secret"):
        ref.reveal()
    (tmp_path / "empty.secret").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        SecretRef.parse("file:empty.secret", base_dir=tmp_path).reveal()


def test_secret_refs_show_the_reference_never_the_value(tmp_path: Path) -> None:
    ref = SecretRef.parse("${MY_TOKEN}", environ={"MY_TOKEN": "tok-123456"})
    assert ref.reveal() == "tok-123456"
    assert str(ref) == "${MY_TOKEN}"
    assert repr(ref) == "SecretRef('${MY_TOKEN}')"
    assert "tok-123456" not in repr(Config(storage={"secret_key": ref}))  # type: ignore[arg-type]
    file_ref = SecretRef.parse("file:~/k.secret")
    assert str(file_ref) == "file:~/k.secret"
    assert file_ref.path == Path("~/k.secret").expanduser()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("plain-literal", "literal secrets are not allowed; use ${ENV_VAR} or file:PATH"),
        ("${NOT VALID}", "malformed environment reference"),
        ("$PLAIN", "literal secrets are not allowed"),
        ("file:", "a file: reference needs a path"),
    ],
)
def test_what_is_not_a_reference_is_refused_without_quoting_it(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SecretRef.parse(text, where="f: k")
    (problem,) = caught.value.problems
    assert problem.startswith(f"f: k: {message}")
    assert text not in problem or text == "file:"


def test_secret_named_options_must_be_references_and_others_may_be_literal(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """
        [storage.candles]
        plugin = "scylla"
        keyspace = "trader"
        key_file = "/etc/trader/key.pem"
        auth_token = "tok-literal-value"
        credentials = { user = "u", pass = "p-literal-value" }
        [schedules.ping]
        scheduler = "interval"
        task = "ping"
        every = "1m"
        webhook_secret = "${HOOK}"
        """,
    )
    problems = problems_of(path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "storage.candles.auth_token: literal secrets are not allowed; use ${ENV_VAR} or file:PATH",
        "storage.candles.credentials.user: literal secrets are not allowed; use ${ENV_VAR} or "
        "file:PATH",
        "storage.candles.credentials.pass: literal secrets are not allowed; use ${ENV_VAR} or "
        "file:PATH",
    ]
    assert "literal-value" not in " ".join(problems)


def test_non_string_secret_fields_are_reported_by_type(tmp_path: Path) -> None:
    path = write(tmp_path, "[exchanges.bitfinex]\napi_key = 12345678\n")
    (problem,) = problems_of(path)
    assert problem.endswith(
        'exchanges.bitfinex.api_key: expected a secret reference such as "${ENV_VAR}" or '
        '"file:PATH", got an integer'
    )
    assert "12345678" not in problem


literal_secrets = st.text(
    alphabet=string.ascii_letters + string.digits + "!#%&*+-./:;<=>?@^_|~", min_size=8
).filter(lambda text: not text.startswith(("${", "file:")))


@given(secret=literal_secrets, option=st.sampled_from(["password", "api_token", "db_secret"]))
def test_literal_secrets_never_appear_in_any_message(secret: str, option: str) -> None:
    document = {
        "storage": {"state": {"plugin": "sqlite", option: secret}},
        "exchanges": {"bitfinex": {"api_key": secret, "api_secret": secret}},
        "risk": {"kill_switch": secret},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    text = str(caught.value)
    assume(secret not in STARTER_TOML)  # a tiny literal could match fixed message text
    assert secret not in text
    assert len(caught.value.problems) == 4


# --- plugin options -----------------------------------------------------------------------


class StoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = "x.sqlite"
    pool_size: int = 4
    password: SecretRef | None = None
    dsn: SecretRef | None = None


def registration(options: type[BaseModel] | None = StoreOptions) -> Registration:
    return Registration(
        Kind.CANDLE_STORE, "teststore", object, "testplugin", "trader-test", options
    )


def test_validate_options_returns_the_plugins_model_with_references() -> None:
    options = validate_options(
        registration(), {"pool_size": 8, "password": "${PW}", "dsn": "file:/run/dsn"}
    )
    assert isinstance(options, StoreOptions)
    assert options.pool_size == 8
    assert options.password == SecretRef("env", "PW")
    assert options.dsn is not None and options.dsn.kind == "file"


def test_validate_options_reports_every_problem_with_the_prefix_and_a_hint() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_options(
            registration(),
            {"pth": "a", "pool_size": "many", "password": "literal-pw", "dsn": "also-literal"},
            where="trader.toml: storage.candles",
            reserved=("plugin",),
        )
    assert caught.value.problems == [
        "trader.toml: storage.candles.password: literal secrets are not allowed; use ${ENV_VAR} "
        "or file:PATH",
        "trader.toml: storage.candles.pth: unknown key: candle store 'teststore' has no such "
        "option; did you mean path?",
        "trader.toml: storage.candles.pool_size: expected an integer, got a string",
        "trader.toml: storage.candles.dsn: literal secrets are not allowed; use ${ENV_VAR} or "
        "file:PATH",
    ]
    assert "literal-pw" not in str(caught.value) and "also-literal" not in str(caught.value)


def test_validate_options_without_a_model_returns_the_dict() -> None:
    options = validate_options(registration(None), {"a": 1, "token": "${T}"})
    assert options == {"a": 1, "token": SecretRef("env", "T")}


def test_a_plugin_declaring_a_secret_option_as_str_is_told_to_use_secretref() -> None:
    class Loose(BaseModel):
        password: str

    with pytest.raises(ConfigError, match=r"must declare this option as trader\.config\.SecretRef"):
        validate_options(registration(Loose), {"password": "${PW}"})


# --- checking against installed plugins ---------------------------------------------------


def host_without_entry_points() -> PluginHost:
    """The default plugins only: no installed distribution is loaded."""
    return PluginHost(environ={"TRADER_LOAD_PLUGINS": "no-such-distribution"}).load()


def test_check_suggests_only_known_distributions_for_missing_capabilities(
    tmp_path: Path,
) -> None:
    (tmp_path / "sma.lua").write_text("-- a strategy\n")
    path = write(
        tmp_path,
        """
        [storage.candles]
        plugin = "timescale"
        [exchanges.bitfinex]
        [exchanges.foo]
        [strategies.sma]
        path = "sma.lua"
        [schedules.report]
        scheduler = "lunar"
        task = "report.daily"
        [schedules.tick]
        scheduler = "intervall"
        task = "tick"
        """,
    )
    problems = check_config(load_config(path), host_without_entry_points())
    places = [p.split(": ")[1] for p in problems]
    assert places == [
        "storage.candles.plugin",
        "exchanges.bitfinex",
        "exchanges.foo",
        "strategies.sma.runtime",
        "schedules.report.scheduler",
        "schedules.tick.scheduler",
    ]
    timescale, bitfinex, foo, lua, lunar, intervall = problems
    # First-party capabilities name the distribution that provides them.
    assert timescale.split(": ", 1)[1].startswith(
        "storage.candles.plugin: no candle store named 'timescale' is installed (installed: sqlite)"
    )
    assert timescale.endswith("pip install trader-storage-timescale")
    assert bitfinex.endswith("pip install trader-exchange-bitfinex")
    assert lua.endswith("pip install trader-strategy-lua")
    # Unknown names get no made-up distribution name (anyone could register it on an index).
    assert "no exchange named 'foo' is installed (installed: " in foo
    assert "pip install" not in foo
    assert "no scheduler named 'lunar' is installed (installed: candle_close, cron, interval)" in (
        lunar
    )
    for problem in (foo, lunar, intervall):
        assert "pip install" not in problem, problem
    assert "trader-exchange-foo" not in foo and "trader-scheduler-lunar" not in lunar
    # A name close to an installed one is taken for a typo.
    assert "did you mean" in intervall and "interval" in intervall.split("did you mean")[1]


def test_check_validates_options_files_keys_and_secrets(
    tmp_path: Path, make_distribution: Any
) -> None:
    make_distribution(
        "trader-exchange-paperx",
        """
        from pydantic import BaseModel, ConfigDict
        from trader.config import SecretRef
        from trader.hookspecs import hookimpl

        class PaperOptions(BaseModel):
            model_config = ConfigDict(extra="forbid")
            api_key: SecretRef | None = None
            api_secret: SecretRef | None = None
            starting_balance: float = 10_000.0

        @hookimpl
        def register_exchanges(register):
            register("paperx", lambda options, context: None, options=PaperOptions)
        """,
    )
    host = PluginHost(environ={"TRADER_LOAD_PLUGINS": "trader-exchange-paperx"}).load()
    path = write(
        tmp_path,
        """
        [exchanges.paperx]
        api_key = "${PAPER_KEY}"
        starting_balanse = 5
        [schedules.tick]
        scheduler = "interval"
        task = "tick"
        evry = "5m"
        [cluster]
        transport = "tcp"
        keys_dir = "keys"
        """,
    )
    problems = [p.split(": ", 1)[1] for p in check_config(load_config(path, environ={}), host)]
    assert problems == [
        "exchanges.paperx.starting_balanse: unknown key: exchange 'paperx' has no such option; "
        "did you mean starting_balance?",
        "schedules.tick.evry: unknown key: scheduler 'interval' has no such option; did you "
        "mean every?",
        "schedules.tick.every: required key is missing",
        f"cluster.keys_dir: directory {tmp_path / 'keys'} does not exist; make keys with "
        "`trader keys`",
        "exchanges.paperx.api_key: environment variable PAPER_KEY is not set",
    ]
    fixed = path.read_text().replace("starting_balanse", "starting_balance")
    fixed = fixed.replace("evry", "every")
    (tmp_path / "keys").mkdir()
    config = load_config(write(tmp_path, fixed), environ={"PAPER_KEY": "k"})
    assert check_config(config, host) == []


# --- every stage at once -------------------------------------------------------------------

ACROSS_STAGES = """
[risk]
max_order_per_minute = 5

[storage.candles]
plugin = "sqlite"
busy_timeout_ms = "lots"
pathh = "x.db"

[exchanges.bitfinex]
api_key = "${BITFINEX_API_KEY}"

[exchanges.odd]
plugin = "Bad Name"

[strategies.sma]
path = "sma.lua"

[schedules.tick]
scheduler = "interval"
task = "tick"
evry = "5m"
"""


def test_check_file_reports_mistakes_of_every_stage_in_one_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, ACROSS_STAGES)
    problems = check_file("trader.toml", host_without_entry_points(), environ={})
    places = [p.split(": ")[1] for p in problems]
    assert places == [
        # structural: the file's own keys
        "risk.max_order_per_minute",
        # plugin options, although [risk] is broken
        "storage.candles.pathh",
        "storage.candles.busy_timeout_ms",
        # a missing capability and its secret, although a sibling exchange is broken
        "exchanges.bitfinex",
        "exchanges.bitfinex.api_key",
        "exchanges.odd.plugin",
        # files and runtimes
        "strategies.sma.path",
        "strategies.sma.runtime",
        "schedules.tick.evry",
        "schedules.tick.every",
    ], problems
    assert all(p.startswith("trader.toml: ") for p in problems)
    text = "\n".join(problems)
    assert "unknown key; did you mean max_orders_per_minute?" in problems[0]
    assert "candle store 'sqlite' has no such option; did you mean path?" in problems[1]
    assert problems[2].endswith("expected an integer, got a string")
    assert problems[3].endswith("pip install trader-exchange-bitfinex")
    assert problems[4].endswith("environment variable BITFINEX_API_KEY is not set")
    assert "'Bad Name' is not a plugin name" in problems[5]
    assert "sma.lua does not exist" in problems[6]
    assert "no strategy runtime named 'lua' is installed" in problems[7]
    assert "did you mean every?" in text

    # load_config keeps its contract: the file's own problems, all of them, plugins unread...
    assert [p.split(": ")[1] for p in problems_of(Path("trader.toml"))] == [
        "risk.max_order_per_minute",
        "exchanges.odd.plugin",
    ]
    # ...and with a host it adds the options of the components asked for, in file order.
    with_stores = problems_of(
        Path("trader.toml"), host=host_without_entry_points(), components=["storage"]
    )
    assert [p.split(": ")[1] for p in with_stores] == [
        "risk.max_order_per_minute",
        "storage.candles.pathh",
        "storage.candles.busy_timeout_ms",
        "exchanges.odd.plugin",
    ]
    everything = problems_of(Path("trader.toml"), host=host_without_entry_points())
    assert [p.split(": ")[1] for p in everything] == [
        place
        for place in places
        if place not in ("exchanges.bitfinex.api_key", "strategies.sma.path")
    ]


def test_a_broken_table_is_left_out_of_the_plugin_checks_not_checked_as_defaults(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """
        [storage.candles]
        plugin = "not a name"
        password = "literal"

        [storage.state]
        busy_timeout_s = "long"
        """,
    )
    problems = check_file(path, host_without_entry_points())
    assert [p.split(": ", 1)[1] for p in problems] == [
        "storage.candles.plugin: 'not a name' is not a plugin name: use lower case letters, "
        "digits and _, starting with a letter (such as sqlite)",
        "storage.candles.password: literal secrets are not allowed; use ${ENV_VAR} or file:PATH",
        "storage.state.busy_timeout_s: expected a number, got a string",
    ]


def test_check_file_reports_a_file_it_cannot_read_as_one_problem(tmp_path: Path) -> None:
    broken = write(tmp_path, "risk = = 3\n")
    assert check_file(broken) == [
        f"{broken}: line 1, column 8: invalid TOML: invalid value",
    ]
    assert check_file(tmp_path / "none.toml")[0].endswith(
        f"file not found; create one with `trader config init {tmp_path / 'none.toml'}`"
    )


def test_check_file_without_a_file_checks_the_built_in_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_file(host=host_without_entry_points()) == []


# --- the reference documentation ----------------------------------------------------------

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"


def toml_blocks(text: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)


def test_every_toml_example_in_the_reference_loads(tmp_path: Path) -> None:
    blocks = toml_blocks(REFERENCE.read_text())
    assert len(blocks) >= 8
    # The assignments example refers to the exchanges and strategies examples.
    definitions = next(block for block in blocks if "[exchanges.bitfinex_savings]" in block)
    definitions += next(block for block in blocks if block.startswith("[strategies."))
    for block in blocks:
        standalone = "[[assignments]]" not in block or "[exchanges." in block
        load_config(write(tmp_path, block if standalone else definitions + block))
    complete = load_config(write(tmp_path, blocks[-1]))
    assert complete.assignments[0].id == "sma_cross@bitfinex:BTC/USD:1h"


def test_the_reference_documents_every_key_of_every_section() -> None:
    text = REFERENCE.read_text()
    models: list[type[BaseModel]] = [
        StorageConfig,
        ExchangeConfig,
        StrategyConfig,
        AssignmentConfig,
        RiskConfig,
        ScheduleConfig,
        ClusterConfig,
    ]
    for model in models:
        for name in model.model_fields:
            if name == "options":
                continue
            assert f"| `{name}` |" in text, f"{model.__name__}.{name} is not documented"
    for section in SECTIONS:
        assert f"`{section}`" in text or f"[{section}" in text, section
