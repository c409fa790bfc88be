from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from trader.errors import CapabilityNotFound, PluginError
from trader.interfaces import PluginContext
from trader.model import Event, Order, OrderCheck
from trader.plugins import PluginHost, get_plugin_manager, reset_plugin_manager
from trader.registry import Kind

from .conftest import MakeDistribution

FIRST_PARTY = {
    "exchange_bitfinex": "trader-exchange-bitfinex",
    "storage_timescale": "trader-storage-timescale",
    "storage_scylla": "trader-storage-scylla",
    "strategy_lua": "trader-strategy-lua",
    "strategy_python": "trader-strategy-python",
}

STORE_PLUGIN = """
from trader.hookspecs import hookimpl

class Store:
    def __init__(self, options, context):
        self.options = options

@hookimpl
def register_candle_stores(register):
    register({name!r}, Store, summary="a test store")
"""


def load(**env: str) -> PluginHost:
    return PluginHost(environ=env).load()


def test_defaults_and_first_party_plugins_are_discovered() -> None:
    host = load()
    assert host.plugin_info("sqlite") is not None and host.plugin_info("sqlite").default  # type: ignore[union-attr]
    assert host.plugin_info("schedulers") is not None
    for entry, dist in FIRST_PARTY.items():
        info = host.plugin_info(entry)
        assert info is not None, entry
        assert info.distribution == dist
        assert info.problems == []


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_works(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution("trader-broken", "raise RuntimeError('database driver missing')\n")
    make_distribution("trader-good", STORE_PLUGIN.format(name="good"))
    host = load()
    broken = host.plugin_info("trader_broken")
    assert broken is not None
    assert broken.distribution == "trader-broken"
    assert broken.error == "failed to import: RuntimeError: database driver missing"
    assert "good" in host.registry.names(Kind.CANDLE_STORE)
    assert any(str(p).startswith("plugin trader_broken (trader-broken)") for p in host.problems)


def test_a_plugin_calling_sys_exit_on_import_does_not_end_the_host(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution("trader-exits", "import sys\nsys.exit(3)\n")
    host = load()
    assert host.plugin_info("trader_exits").error == "failed to import: SystemExit: 3"  # type: ignore[union-attr]


def test_malformed_registrations_are_reported_and_good_ones_kept(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "trader-sloppy",
        """
        from trader.hookspecs import hookimpl

        @hookimpl
        def register_candle_stores(register):
            register("Bad Name", lambda o, c: None)
            register("not_callable", 42)
            register("bad_options", lambda o, c: None, options=dict)
            register("fine", lambda o, c: None)
        """,
    )
    host = load()
    problems = host.plugin_info("trader_sloppy").problems  # type: ignore[union-attr]
    assert len(problems) == 3
    assert "capability name 'Bad Name' is malformed" in problems[0]
    assert "factory 42 is not callable" in problems[1]
    assert "options must be a pydantic model class" in problems[2]
    assert host.registration(Kind.CANDLE_STORE, "fine").plugin == "trader_sloppy"


def test_a_taken_capability_name_is_reported_with_both_owners(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution("trader-aaa", STORE_PLUGIN.format(name="shared"))
    make_distribution("trader-bbb", STORE_PLUGIN.format(name="shared"))
    host = load()
    assert host.registration(Kind.CANDLE_STORE, "shared").distribution == "trader-aaa"
    (message,) = host.plugin_info("trader_bbb").problems  # type: ignore[union-attr]
    assert message == (
        "candle store name 'shared' is already registered by plugin trader_aaa (trader-aaa); "
        "this registration is ignored"
    )


def test_a_plugin_cannot_take_a_default_plugins_capability_name(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution("trader-usurper", STORE_PLUGIN.format(name="sqlite"))
    host = load()
    assert host.registration(Kind.CANDLE_STORE, "sqlite").plugin == "sqlite"
    (message,) = host.plugin_info("trader_usurper").problems  # type: ignore[union-attr]
    assert "already registered by plugin sqlite (trader)" in message


def test_a_misspelt_hook_is_reported_with_a_suggestion_and_the_plugin_not_loaded(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "trader-typo",
        """
        from trader.hookspecs import hookimpl

        @hookimpl
        def register_candle_store(register):
            register("typo", lambda o, c: None)
        """,
    )
    host = load()
    (message,) = host.plugin_info("trader_typo").problems  # type: ignore[union-attr]
    assert "unknown hook 'register_candle_store'; did you mean register_candle_stores?" in message
    assert "typo" not in host.registry.names(Kind.CANDLE_STORE)
    host.pm.check_pending()  # nothing unknown is left registered


def test_an_implementation_with_parameters_the_spec_lacks_is_rejected(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "trader-extra-arg",
        """
        from trader.hookspecs import hookimpl

        @hookimpl
        def register_exchanges(register, secret_sauce):
            pass
        """,
    )
    host = load()
    message = host.plugin_info("trader_extra_arg").error  # type: ignore[union-attr]
    assert message is not None and message.startswith("rejected:")
    assert "secret_sauce" in message


def test_a_registration_hook_that_raises_is_reported(make_distribution: MakeDistribution) -> None:
    make_distribution(
        "trader-raises",
        """
        from trader.hookspecs import hookimpl

        @hookimpl
        def register_schedulers(register):
            raise ValueError("no calendar data")
        """,
    )
    host = load()
    assert host.plugin_info("trader_raises").problems == [  # type: ignore[union-attr]
        "register_schedulers raised ValueError: no calendar data"
    ]
    assert "cron" in host.registry.names(Kind.SCHEDULER)


def test_load_plugins_limits_to_named_distributions(make_distribution: MakeDistribution) -> None:
    make_distribution("trader-one", STORE_PLUGIN.format(name="one"))
    make_distribution("trader-two", STORE_PLUGIN.format(name="two"))
    host = load(TRADER_LOAD_PLUGINS="trader-one, storage_scylla")
    assert set(host.plugins) == {"sqlite", "schedulers", "paper", "trader_one", "storage_scylla"}


def test_disable_plugins_skips_named_plugins_including_defaults(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution("trader-one", STORE_PLUGIN.format(name="one"))
    host = load(TRADER_DISABLE_PLUGINS="trader_one,sqlite,trader-strategy-lua")
    assert "trader_one" not in host.plugins
    assert "sqlite" not in host.plugins
    assert "strategy_lua" not in host.plugins
    assert "sqlite" not in host.registry.names(Kind.CANDLE_STORE)
    assert "schedulers" in host.plugins


def test_a_clashing_entry_point_name_loads_from_neither_distribution(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution("trader-first", STORE_PLUGIN.format(name="first"), entry="same_name")
    make_distribution("trader-second", STORE_PLUGIN.format(name="second"), entry="same_name")
    host = load()
    assert host.plugin_info("same_name") is None
    assert not {"first", "second"} & set(host.registry.names(Kind.CANDLE_STORE))
    refused = {info.distribution: info for info in host.refused}
    assert set(refused) == {"trader-first", "trader-second"}
    assert refused["trader-first"].problems == [
        "entry point name 'same_name' is also provided by trader-second; none of them is "
        "loaded (uninstall the one you do not want)"
    ]
    assert not refused["trader-second"].loaded


def test_an_installed_plugin_cannot_take_a_first_party_or_default_entry_point_name(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution("evil-dist", STORE_PLUGIN.format(name="evil"), entry="strategy_lua")
    make_distribution("evil-two", STORE_PLUGIN.format(name="evil2"), entry="sqlite")
    host = load()
    assert host.plugin_info("strategy_lua") is None  # neither the real nor the impostor
    assert {i.distribution for i in host.refused if i.name == "strategy_lua"} == {
        "evil-dist",
        "trader-strategy-lua",
    }
    sqlite = host.plugin_info("sqlite")
    assert sqlite is not None and sqlite.problems == []  # the built-in keeps its name
    (impostor,) = [i for i in host.refused if i.name == "sqlite"]
    assert impostor.distribution == "evil-two"
    assert "also provided by trader (a default plugin)" in impostor.problems[0]
    assert "evil2" not in host.registry.names(Kind.CANDLE_STORE)


def test_a_hook_wrapper_is_refused(make_distribution: MakeDistribution) -> None:
    make_distribution(
        "trader-wraps",
        """
        from trader.hookspecs import hookimpl

        @hookimpl(wrapper=True)
        def on_event(event):
            yield
        """,
    )
    host = load()
    assert host.plugin_info("trader_wraps").problems == [  # type: ignore[union-attr]
        "implements on_event as a wrapper, which trader's hooks do not support "
        "(the plugin is not loaded)"
    ]


def test_missing_capability_names_the_distribution_to_install() -> None:
    host = load(TRADER_LOAD_PLUGINS="defaults-only")  # first-party plugins absent
    with pytest.raises(CapabilityNotFound) as raised:
        host.registration(Kind.EXCHANGE, "bitfinex")
    assert "no exchange named 'bitfinex' is installed" in str(raised.value)
    assert "install it with: pip install trader-exchange-bitfinex" in str(raised.value)
    # Unknown names never get a made-up package name (anyone could register it).
    with pytest.raises(CapabilityNotFound) as raised:
        host.registration(Kind.CANDLE_STORE, "sqlit")
    assert "did you mean 'sqlite'?" in str(raised.value)
    assert "pip install" not in str(raised.value)
    with pytest.raises(CapabilityNotFound, match="`trader plugins` lists what is installed"):
        host.registration(Kind.CANDLE_STORE, "zzz")


def test_missing_capability_mentions_disabled_plugins() -> None:
    host = load(TRADER_DISABLE_PLUGINS="sqlite")
    with pytest.raises(CapabilityNotFound, match=r"TRADER_DISABLE_PLUGINS is set: sqlite"):
        host.registration(Kind.CANDLE_STORE, "sqlite")


def test_a_factory_that_fails_is_a_plugin_error_naming_the_plugin(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "trader-fragile",
        """
        from trader.hookspecs import hookimpl

        def explode(options, context):
            raise OSError("disk on fire")

        @hookimpl
        def register_candle_stores(register):
            register("fragile", explode)
        """,
    )
    host = load()
    with pytest.raises(
        PluginError,
        match=r"plugin trader_fragile \(trader-fragile\) failed to start: OSError: disk on fire",
    ):
        host.build(Kind.CANDLE_STORE, "fragile", {}, None)


def test_get_plugin_manager_is_cached_until_reset() -> None:
    first = get_plugin_manager()
    assert get_plugin_manager() is first
    reset_plugin_manager()
    assert get_plugin_manager() is not first


# One test per hook (the hook meta-test checks these names exist). ---------------------------


def _registering(hook: str, name: str) -> str:
    return f"""
    from trader.hookspecs import hookimpl

    @hookimpl
    def {hook}(register):
        register({name!r}, lambda options, context: ("built", options), summary="{hook} test")
    """


@pytest.mark.parametrize(
    ("hook", "kind"),
    [
        ("register_exchanges", Kind.EXCHANGE),
        ("register_candle_stores", Kind.CANDLE_STORE),
        ("register_state_stores", Kind.STATE_STORE),
        ("register_strategy_runtimes", Kind.STRATEGY_RUNTIME),
        ("register_schedulers", Kind.SCHEDULER),
    ],
)
def test_every_register_hook_registers_buildable_capabilities(
    make_distribution: MakeDistribution, hook: str, kind: Kind
) -> None:
    make_distribution(f"trader-{kind.value}-x", _registering(hook, f"x_{kind.value}"))
    host = load()
    registration = host.registration(kind, f"x_{kind.value}")
    assert registration.summary == f"{hook} test"
    assert host.build(kind, f"x_{kind.value}", {"a": 1}, None) == ("built", {"a": 1})
    info = host.plugin_info(f"trader_{kind.value}_x")
    assert info is not None and info.hooks == [hook]
    assert info.registers == {kind.value: [f"x_{kind.value}"]}


def test_hook_register_exchanges(make_distribution: MakeDistribution) -> None:
    make_distribution("trader-exchange-toy", _registering("register_exchanges", "toy"))
    host = load()
    assert host.registration(Kind.EXCHANGE, "toy").distribution == "trader-exchange-toy"
    assert host.build(Kind.EXCHANGE, "toy", {}, None) == ("built", {})


def test_hook_register_candle_stores() -> None:
    host = load()
    assert host.registration(Kind.CANDLE_STORE, "sqlite").plugin == "sqlite"


def test_hook_register_state_stores() -> None:
    host = load()
    assert host.registration(Kind.STATE_STORE, "sqlite").plugin == "sqlite"


def test_hook_register_strategy_runtimes(make_distribution: MakeDistribution) -> None:
    make_distribution("trader-strategy-toy", _registering("register_strategy_runtimes", "toy"))
    assert "toy" in load().registry.names(Kind.STRATEGY_RUNTIME)


def test_hook_register_schedulers() -> None:
    assert {"interval", "cron", "candle_close"} <= set(load().registry.names(Kind.SCHEDULER))


def test_hook_register_commands_adds_commands_but_cannot_replace_them(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "trader-commands",
        """
        import click
        from trader.hookspecs import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                "Say hello."
                click.echo("hello from a plugin")

            @cli.command(name="data")
            def hijack():
                click.echo("hijacked")
        """,
    )
    host = load()
    group = click.Group("trader")

    @group.command(name="data")
    def data() -> None:
        click.echo("the real data command")

    host.add_commands(group)
    runner = CliRunner()
    assert runner.invoke(group, ["hello"]).output == "hello from a plugin\n"
    assert runner.invoke(group, ["data"]).output == "the real data command\n"
    assert host.plugin_info("trader_commands").problems == [  # type: ignore[union-attr]
        "command 'data' already exists; the plugin's command is ignored"
    ]


def _order() -> Order:
    return Order("tid", "paper", "BTC/USD", "buy", "market", Decimal(5))  # type: ignore[arg-type]


def test_hook_check_order_collects_every_veto_and_treats_exceptions_as_vetoes(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution(
        "trader-risk-size",
        """
        from decimal import Decimal
        from trader.hookspecs import hookimpl

        @hookimpl
        def check_order(check):
            if check.order.amount > Decimal(1):
                return f"amount {check.order.amount} above the limit 1"
            return None
        """,
    )
    make_distribution(
        "trader-risk-broken",
        """
        from trader.hookspecs import hookimpl

        @hookimpl
        def check_order(check):
            raise KeyError("limits")
        """,
    )
    make_distribution(
        "trader-risk-lenient",
        """
        from trader.hookspecs import hookimpl

        @hookimpl
        def check_order(check):
            return None
        """,
    )
    host = load()
    reasons = host.check_order(OrderCheck(_order(), "main"))
    assert sorted(reasons) == [
        "trader_risk_broken: risk check failed: KeyError: 'limits'",
        "trader_risk_size: amount 5 above the limit 1",
    ]


def test_hook_on_event_reaches_every_plugin_even_when_one_fails(
    make_distribution: MakeDistribution, caplog: pytest.LogCaptureFixture
) -> None:
    make_distribution(
        "trader-notify-broken",
        """
        from trader.hookspecs import hookimpl

        @hookimpl
        def on_event(event):
            raise RuntimeError("smtp down")
        """,
    )
    make_distribution(
        "trader-notify-log",
        """
        from trader.hookspecs import hookimpl
        seen = []

        @hookimpl
        def on_event(event):
            seen.append(event.kind)
        """,
    )
    host = load()
    with caplog.at_level(logging.ERROR):
        host.emit_event(Event("order.filled", 1, {"symbol": "BTC/USD"}))
    import trader_notify_log  # type: ignore[import-not-found]

    assert trader_notify_log.seen == ["order.filled"]
    assert "plugin trader_notify_broken failed handling event order.filled" in caplog.text


def test_plugin_context_repr_never_shows_settings(tmp_path: Path) -> None:
    context = PluginContext(tmp_path, tmp_path, settings={"secret_key": "hunter2-very-secret"})
    assert "hunter2" not in repr(context)
    assert "hunter2" not in str(context)
