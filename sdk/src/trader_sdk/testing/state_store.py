"""The state store conformance suite.

Subclass :class:`StateStoreConformance` in a test module of your plugin and override the
``state_store_factory`` fixture; every test of the suite then runs against your store::

    import pytest
    from trader_sdk.testing.state_store import StateStoreConformance

    class TestMyStateStore(StateStoreConformance):
        @pytest.fixture
        def state_store_factory(self, tmp_path):
            return lambda: MyStateStore(MyOptions(path=str(tmp_path / "db")), context)

Each test asks the factory for stores and opens them itself; each call must return a new,
unopened store over the *same* storage (so the suite can check that data survives a reopen and
that two stores over one database cannot both move a task), with a secret key configured. Give
every test fresh, empty storage (a function-scoped fixture over ``tmp_path`` does).

Two optional fixtures unlock more tests, which are skipped when they return ``None``:

* ``state_store_factory_with_key`` — a callable ``(secret_key or None) -> new unopened store``
  over the same storage as ``state_store_factory``: checks saving secrets without a key fails
  and reading them with another key fails clearly.
* ``raw_dump`` — a callable returning the raw bytes of the storage (every file, or a dump of
  every table), called while no store is open: checks secrets are not stored in the clear.

Tests are synchronous and run their scenario with :func:`asyncio.run`; their ids
(``test_ss01_...``) are stable, so a plugin can name a test it cannot pass yet in an ``xfail``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from trader.errors import ConfigError, StorageError
from trader.interfaces.state_store import (
    Assignment,
    Evaluation,
    Report,
    ScheduleRecord,
    StateStore,
    TaskRecord,
    TaskTransition,
    TradingAccount,
)
from trader.model import Fill, Order, OrderSide, OrderStatus, OrderType

StoreFactory = Callable[[], StateStore]
"""Makes a new, unopened state store over the test's storage."""

KeyedStoreFactory = Callable[[str | None], StateStore]
"""Makes a new, unopened state store over the test's storage with the given secret key."""

RawDump = Callable[[], bytes]
"""Returns the raw bytes the storage holds."""

T = TypeVar("T")

_T0 = 1_700_000_000_000  # a time in ms beyond 32 bits: stores must keep 64-bit times
_TIMEOUT_S = 60.0

# Decimals that a binary float would change: stores must keep them exactly.
EXACT_DECIMALS = (
    Decimal("0.1"),
    Decimal("0.00000001"),
    Decimal("1234567890.123456789012345678"),
    Decimal("0.3333333333333333333333333333"),
    Decimal("1E-18"),
    Decimal("98765432109876543210"),
)


def _order(client_order_id: str, *, created_at: int = _T0, **changes: Any) -> Order:
    values: dict[str, Any] = {
        "client_order_id": client_order_id,
        "exchange": "paper",
        "symbol": "BTC/USDT",
        "side": OrderSide.BUY,
        "type": OrderType.LIMIT,
        "amount": Decimal("0.12345678"),
        "price": Decimal("43210.123456789"),
        "created_at": created_at,
        "updated_at": created_at,
        "assignment": "a1",
    }
    values.update(changes)
    return Order(**values)


def _fill(fill_id: str, client_order_id: str, time: int, **changes: Any) -> Fill:
    values: dict[str, Any] = {
        "fill_id": fill_id,
        "client_order_id": client_order_id,
        "exchange": "paper",
        "symbol": "BTC/USDT",
        "side": OrderSide.BUY,
        "amount": Decimal("0.00000001"),
        "price": Decimal("43210.123456789012345678"),
        "fee": Decimal("0.000000000123"),
        "fee_currency": "USDT",
        "time": time,
        "maker": True,
    }
    values.update(changes)
    return Fill(**values)


def _task(task_id: str, *, state: str = "queued", task_type: str = "backtest") -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        type=task_type,
        owner="broker",
        state=state,
        payload={"job": task_id, "params": {"fast": 10, "slow": 30}},
        created_at=_T0,
        updated_at=_T0,
    )


class StateStoreConformance:
    """The contract of :class:`~trader.interfaces.StateStore`, as tests.

    Override ``state_store_factory``; optionally ``state_store_factory_with_key`` and
    ``raw_dump`` (see the module's docstring).
    """

    # ------------------------------------------------------------ fixtures to override

    @pytest.fixture
    def state_store_factory(self) -> StoreFactory:
        """Return a zero-argument callable making a new unopened store over one storage."""
        raise NotImplementedError(
            f"{type(self).__name__} must override the state_store_factory fixture"
        )

    @pytest.fixture
    def state_store_factory_with_key(self) -> KeyedStoreFactory | None:
        """Optionally return ``(secret_key or None) -> new store`` over the same storage."""
        return None

    @pytest.fixture
    def raw_dump(self) -> RawDump | None:
        """Optionally return a callable giving the raw bytes of the storage."""
        return None

    # ------------------------------------------------------------ helpers

    @staticmethod
    def run_with(factory: StoreFactory, scenario: Callable[[StateStore], Awaitable[T]]) -> T:
        """Open a new store from ``factory``, run ``scenario`` on it, and close it."""

        async def main() -> T:
            store = factory()
            await store.open()
            try:
                return await asyncio.wait_for(scenario(store), _TIMEOUT_S)
            finally:
                await store.close()

        return asyncio.run(main())

    # ------------------------------------------------------------ lifecycle

    def test_ss01_open_and_close_are_idempotent(self, state_store_factory: StoreFactory) -> None:
        async def main() -> None:
            store = state_store_factory()
            await store.open()
            await store.open()
            assert await store.get_user("nobody") is None
            await store.close()
            await store.close()
            async with state_store_factory() as again:
                assert await again.list_strategies() == []

        asyncio.run(main())

    # ------------------------------------------------------------ users

    def test_ss02_users_are_unique_by_name(self, state_store_factory: StoreFactory) -> None:
        async def scenario(store: StateStore) -> None:
            alice = await store.add_user("alice")
            bob = await store.add_user("bob")
            assert alice.name == "alice" and bob.name == "bob"
            assert alice.user_id and alice.user_id != bob.user_id
            assert await store.get_user("alice") == alice
            assert await store.get_user("carol") is None
            with pytest.raises(StorageError):
                await store.add_user("alice")
            assert await store.get_user("alice") == alice

        self.run_with(state_store_factory, scenario)

    # ------------------------------------------------------------ strategies

    def test_ss03_strategy_versions_count_up_and_dedupe(
        self, state_store_factory: StoreFactory
    ) -> None:
        async def scenario(store: StateStore) -> None:
            first = await store.save_strategy("sma", "lua", "return 1")
            assert (first.name, first.version, first.language) == ("sma", 1, "lua")
            assert first.source == "return 1"
            assert await store.save_strategy("sma", "lua", "return 1") == first
            second = await store.save_strategy("sma", "lua", "return 2")
            assert second.version == 2 and second.source == "return 2"
            assert await store.get_strategy("sma") == second
            assert await store.get_strategy("sma", 1) == first
            assert await store.get_strategy("sma", 2) == second
            assert await store.get_strategy("sma", 3) is None
            assert await store.get_strategy("other") is None
            reverted = await store.save_strategy("sma", "lua", "return 1")
            assert reverted.version == 3, "a source equal to an older version is a new version"

        self.run_with(state_store_factory, scenario)

    def test_ss04_list_strategies_gives_the_newest_of_each(
        self, state_store_factory: StoreFactory
    ) -> None:
        async def scenario(store: StateStore) -> None:
            await store.save_strategy("zeta", "python", "v1")
            await store.save_strategy("alpha", "lua", "v1")
            newest_zeta = await store.save_strategy("zeta", "python", "v2 ünïcode ✓")
            listed = await store.list_strategies()
            assert [(s.name, s.version) for s in listed] == [("alpha", 1), ("zeta", 2)]
            assert listed[1] == newest_zeta

        self.run_with(state_store_factory, scenario)

    def test_ss05_concurrent_saves_of_one_strategy_agree(
        self, state_store_factory: StoreFactory
    ) -> None:
        async def main() -> None:
            async with state_store_factory() as one, state_store_factory() as two:
                same = await asyncio.gather(
                    one.save_strategy("race", "lua", "same"),
                    two.save_strategy("race", "lua", "same"),
                )
                assert [s.version for s in same] == [1, 1]
                different = await asyncio.gather(
                    one.save_strategy("race", "lua", "left"),
                    two.save_strategy("race", "lua", "right"),
                )
                assert sorted(s.version for s in different) == [2, 3]
                for saved in different:
                    assert await one.get_strategy("race", saved.version) == saved

        asyncio.run(asyncio.wait_for(main(), _TIMEOUT_S))

    # ------------------------------------------------------------ accounts

    def test_ss06_account_secrets_round_trip_decrypted(
        self, state_store_factory: StoreFactory
    ) -> None:
        account = TradingAccount(
            name="main",
            exchange="bitfinex",
            settings={"sandbox": True, "limits": {"orders_per_minute": 30}, "label": "Ünïcode"},
            secrets={"api_key": "key-123", "api_secret": "secret-ÿ-456"},
        )
        plain = TradingAccount(name="paper", exchange="paper", settings={"cash": "10000"})

        async def scenario(store: StateStore) -> None:
            await store.save_account(account)
            await store.save_account(plain)
            assert await store.get_account("main") == account
            assert await store.get_account("paper") == plain
            assert await store.get_account("missing") is None
            assert await store.list_accounts() == [account, plain]
            changed = TradingAccount("main", "bitfinex", {"sandbox": False}, {"api_key": "k2"})
            await store.save_account(changed)
            await store.save_account(changed)
            got = await store.get_account("main")
            assert got == changed and got.secrets == {"api_key": "k2"}
            assert len(await store.list_accounts()) == 2

        self.run_with(state_store_factory, scenario)

    def test_ss07_account_repr_hides_secrets(self, state_store_factory: StoreFactory) -> None:
        secret = "do-not-print-" + uuid.uuid4().hex

        async def scenario(store: StateStore) -> TradingAccount | None:
            await store.save_account(TradingAccount("main", "bitfinex", {}, {"api_secret": secret}))
            return await store.get_account("main")

        got = self.run_with(state_store_factory, scenario)
        assert got is not None and got.secrets == {"api_secret": secret}
        for text in (repr(got), str(got), f"{got}", repr([got])):
            assert secret not in text
            assert "api_secret" in text  # which secrets exist may show; their values never

    def test_ss08_secrets_are_not_stored_in_the_clear(
        self, state_store_factory: StoreFactory, raw_dump: RawDump | None
    ) -> None:
        if raw_dump is None:
            pytest.skip("the raw_dump fixture is not provided")
        secret = "plain-secret-" + uuid.uuid4().hex
        visible = "visible-setting-" + uuid.uuid4().hex

        async def scenario(store: StateStore) -> None:
            account = TradingAccount("main", "bitfinex", {"marker": visible}, {"api_key": secret})
            await store.save_account(account)
            assert await store.get_account("main") == account

        self.run_with(state_store_factory, scenario)
        dump = raw_dump()
        assert visible.encode() in dump, "raw_dump does not show the stored data"
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            assert secret.encode(encoding) not in dump
        assert secret.encode().hex().encode() not in dump

    def test_ss09_secrets_need_a_key(
        self,
        state_store_factory: StoreFactory,
        state_store_factory_with_key: KeyedStoreFactory | None,
    ) -> None:
        if state_store_factory_with_key is None:
            pytest.skip("the state_store_factory_with_key fixture is not provided")
        keyed = state_store_factory_with_key
        secret = "secret-" + uuid.uuid4().hex

        async def without_key(store: StateStore) -> None:
            with pytest.raises((StorageError, ConfigError)) as caught:
                await store.save_account(TradingAccount("main", "bitfinex", {}, {"key": secret}))
            assert secret not in str(caught.value)
            assert "key" in str(caught.value).lower()
            assert await store.get_account("main") is None
            await store.save_account(TradingAccount("plain", "paper", {"a": 1}))
            assert await store.get_account("plain") == TradingAccount("plain", "paper", {"a": 1})

        self.run_with(lambda: keyed(None), without_key)

        async def with_key(store: StateStore) -> None:
            await store.save_account(TradingAccount("main", "bitfinex", {}, {"key": secret}))

        self.run_with(lambda: keyed("first key"), with_key)

        async def other_key(store: StateStore) -> None:
            for read in (lambda: store.get_account("main"), store.list_accounts):
                with pytest.raises((StorageError, ConfigError)) as caught:
                    await read()
                assert secret not in str(caught.value)
            assert await store.get_account("plain") is not None

        self.run_with(lambda: keyed("another key"), other_key)
        self.run_with(lambda: keyed(None), other_key)

        async def same_key(store: StateStore) -> None:
            got = await store.get_account("main")
            assert got is not None and got.secrets == {"key": secret}

        self.run_with(lambda: keyed("first key"), same_key)

    # ------------------------------------------------------------ assignments

    def test_ss10_assignments_upsert_filter_and_delete(
        self, state_store_factory: StoreFactory
    ) -> None:
        first = Assignment(
            assignment_id="a1",
            strategy="sma",
            account="main",
            symbol="BTC/USDT",
            timeframe="1h",
            allocation=Decimal("0.3333333333333333333333333333"),
            params={"fast": 10, "slow": 30.5, "name": "x"},
        )
        second = Assignment(
            "a2", "rsi", "main", "ETH/USDT", "15m", Decimal("0.1"), {}, strategy_version=2
        )

        async def scenario(store: StateStore) -> None:
            await store.save_assignment(second)
            await store.save_assignment(first)
            await store.save_assignment(first)
            assert await store.list_assignments() == [first, second]
            disabled = Assignment(
                "a2", "rsi", "main", "ETH/USDT", "15m", Decimal("0.2"), {"x": [1, 2]}, 3, False
            )
            await store.save_assignment(disabled)
            assert await store.list_assignments() == [first, disabled]
            assert await store.list_assignments(enabled_only=True) == [first]
            assert await store.delete_assignment("a1") is True
            assert await store.delete_assignment("a1") is False
            assert await store.list_assignments() == [disabled]

        self.run_with(state_store_factory, scenario)

    # ------------------------------------------------------------ orders and fills

    def test_ss11_orders_upsert_by_client_order_id(self, state_store_factory: StoreFactory) -> None:
        created = _order("o1", stop_price=None)

        async def scenario(store: StateStore) -> None:
            await store.save_order(created)
            await store.save_order(created)
            assert await store.get_order("o1") == created
            assert await store.get_order("missing") is None
            acknowledged = created.with_status(
                OrderStatus.PARTIALLY_FILLED,
                filled=Decimal("0.02345678"),
                average_price=Decimal("43210.1"),
                exchange_order_id="123456789012",
                updated_at=_T0 + 5,
            )
            await store.save_order(acknowledged)
            assert await store.get_order("o1") == acknowledged
            assert await store.list_orders() == [acknowledged]

        self.run_with(state_store_factory, scenario)

    def test_ss12_orders_keep_every_field_exactly(self, state_store_factory: StoreFactory) -> None:
        orders = [
            _order(f"exact{i}", created_at=_T0 + i, amount=value, price=value)
            for i, value in enumerate(EXACT_DECIMALS)
        ]
        orders.append(
            _order(
                "stop",
                created_at=_T0 + 100,
                side=OrderSide.SELL,
                type=OrderType.STOP,
                price=None,
                stop_price=Decimal("39999.99999999"),
                assignment=None,
            )
        )
        orders.append(_order("market", created_at=_T0 + 101, type=OrderType.MARKET, price=None))
        orders.append(_order("maker", created_at=_T0 + 102, post_only=True))

        async def scenario(store: StateStore) -> None:
            for order in reversed(orders):
                await store.save_order(order)
            listed = await store.list_orders()
            assert listed == orders
            for got, want in zip(listed, orders, strict=True):
                assert got.amount == want.amount and got.price == want.price
                assert isinstance(got.amount, Decimal) and isinstance(got.filled, Decimal)
                assert got.side is want.side and got.type is want.type
                assert got.status is want.status

        self.run_with(state_store_factory, scenario)

    def test_ss13_list_orders_open_only_leaves_out_final(
        self, state_store_factory: StoreFactory
    ) -> None:
        statuses = list(OrderStatus)
        orders = [
            _order(f"o{i:02d}", created_at=_T0 + i, status=status)
            for i, status in enumerate(statuses)
        ]

        async def scenario(store: StateStore) -> None:
            for order in orders:
                await store.save_order(order)
            assert await store.list_orders() == orders
            expected = [o for o in orders if not o.status.is_final]
            assert await store.list_orders(open_only=True) == expected
            filled = orders[0].with_status(OrderStatus.FILLED, filled=orders[0].amount)
            await store.save_order(filled)
            assert filled not in await store.list_orders(open_only=True)
            assert len(await store.list_orders(open_only=True)) == len(expected) - 1

        self.run_with(state_store_factory, scenario)

    def test_ss14_fills_are_idempotent(self, state_store_factory: StoreFactory) -> None:
        fills = [
            _fill("f3", "o2", _T0 + 30, side=OrderSide.SELL, maker=False),
            _fill("f1", "o1", _T0 + 10),
            _fill("f2", "o1", _T0 + 20, amount=EXACT_DECIMALS[2], fee=Decimal(0)),
        ]

        async def scenario(store: StateStore) -> None:
            for fill in fills:
                assert await store.add_fill(fill) is True
            assert await store.add_fill(fills[1]) is False
            other_exchange = _fill("f1", "o9", _T0 + 40, exchange="bitfinex")
            assert await store.add_fill(other_exchange) is True, "fill ids are per exchange"
            by_time = sorted([*fills, other_exchange], key=lambda f: f.time)
            assert await store.list_fills() == by_time
            assert await store.list_fills(client_order_id="o1") == [fills[1], fills[2]]
            assert await store.list_fills(since=_T0 + 20) == by_time[1:]
            assert await store.list_fills(client_order_id="o1", since=_T0 + 11) == [fills[2]]
            assert await store.list_fills(client_order_id="nothing") == []

        self.run_with(state_store_factory, scenario)

    # ------------------------------------------------------------ tasks

    def test_ss15_tasks_create_and_read(self, state_store_factory: StoreFactory) -> None:
        async def scenario(store: StateStore) -> None:
            task = _task("01A")
            await store.create_task(task)
            assert await store.get_task("01A") == task
            assert await store.get_task("missing") is None
            assert await store.task_history("01A") == []
            with pytest.raises(StorageError):
                await store.create_task(_task("01A", state="running"))
            assert await store.get_task("01A") == task

        self.run_with(state_store_factory, scenario)

    def test_ss16_transitions_are_recorded_in_order(
        self, state_store_factory: StoreFactory
    ) -> None:
        steps = [
            ("queued", "dispatched", "dispatch", False),
            ("dispatched", "running", "start", False),
            ("running", "queued", "worker_lost", False),
            ("queued", "dispatched", "dispatch", False),
            ("dispatched", "running", "start", False),
            ("running", "done", "finish", True),
        ]

        async def scenario(store: StateStore) -> None:
            await store.create_task(_task("01B"))
            recorded: list[TaskTransition] = []
            for i, (source, dest, trigger, final) in enumerate(steps, start=1):
                step = await store.record_transition(
                    "01B", source, dest, trigger, _T0 + i, final=final, note=f"step {i}"
                )
                assert step == TaskTransition("01B", i, source, dest, trigger, _T0 + i, f"step {i}")
                recorded.append(step)
                task = await store.get_task("01B")
                assert task is not None
                assert (task.state, task.updated_at, task.final) == (dest, _T0 + i, final)
            assert await store.task_history("01B") == recorded
            assert [s.seq for s in recorded] == list(range(1, len(steps) + 1))

        self.run_with(state_store_factory, scenario)

    def test_ss17_transition_payload_and_owner_replace(
        self, state_store_factory: StoreFactory
    ) -> None:
        async def scenario(store: StateStore) -> None:
            task = _task("01C")
            await store.create_task(task)
            await store.record_transition(
                "01C", "queued", "dispatched", "dispatch", _T0 + 1, owner="worker-7"
            )
            got = await store.get_task("01C")
            assert got is not None
            assert (got.owner, got.payload) == ("worker-7", task.payload)
            await store.record_transition(
                "01C", "dispatched", "running", "start", _T0 + 2, payload={"progress": 0.5}
            )
            got = await store.get_task("01C")
            assert got is not None
            assert (got.owner, got.payload, got.state) == ("worker-7", {"progress": 0.5}, "running")
            assert (got.type, got.created_at) == (task.type, task.created_at)

        self.run_with(state_store_factory, scenario)

    def test_ss18_transition_from_the_wrong_state_fails_and_changes_nothing(
        self, state_store_factory: StoreFactory
    ) -> None:
        async def scenario(store: StateStore) -> None:
            await store.create_task(_task("01D"))
            first = await store.record_transition("01D", "queued", "dispatched", "go", _T0 + 1)
            with pytest.raises(StorageError) as caught:
                await store.record_transition(
                    "01D", "queued", "dispatched", "go", _T0 + 2, payload={"lost": True}
                )
            assert "01D" in str(caught.value) and "dispatched" in str(caught.value)
            task = await store.get_task("01D")
            assert task is not None
            assert (task.state, task.updated_at) == ("dispatched", _T0 + 1)
            assert task.payload == _task("01D").payload
            assert await store.task_history("01D") == [first]
            with pytest.raises(StorageError):
                await store.record_transition("nope", "queued", "dispatched", "go", _T0)
            assert await store.task_history("nope") == []

        self.run_with(state_store_factory, scenario)

    def test_ss19_list_tasks_filters_open_and_type(self, state_store_factory: StoreFactory) -> None:
        async def scenario(store: StateStore) -> None:
            for task_id, task_type in [("03", "order"), ("01", "backtest"), ("02", "order")]:
                await store.create_task(_task(task_id, task_type=task_type))
            await store.record_transition("02", "queued", "done", "finish", _T0 + 1, final=True)
            assert [t.task_id for t in await store.list_tasks()] == ["01", "02", "03"]
            assert [t.task_id for t in await store.list_tasks(open_only=True)] == ["01", "03"]
            assert [t.task_id for t in await store.list_tasks(task_type="order")] == ["02", "03"]
            both = await store.list_tasks(open_only=True, task_type="order")
            assert [t.task_id for t in both] == ["03"]
            assert all(t.final for t in await store.list_tasks() if t.task_id == "02")

        self.run_with(state_store_factory, scenario)

    def test_ss20_concurrent_transitions_exactly_one_wins(
        self, state_store_factory: StoreFactory
    ) -> None:
        task_ids = [f"race-{i:02d}" for i in range(12)]

        async def main() -> None:
            async with state_store_factory() as one, state_store_factory() as two:
                for task_id in task_ids:
                    await one.create_task(_task(task_id))
                contenders = [(one, "worker-a"), (two, "worker-b"), (one, "worker-c")]
                for task_id in task_ids:
                    results = await asyncio.gather(
                        *(
                            store.record_transition(
                                task_id, "queued", "running", "claim", _T0 + 1, owner=owner
                            )
                            for store, owner in contenders
                        ),
                        return_exceptions=True,
                    )
                    won = [r for r in results if isinstance(r, TaskTransition)]
                    lost = [r for r in results if isinstance(r, StorageError)]
                    assert len(won) == 1, results
                    assert len(lost) == len(contenders) - 1, results
                    winner = contenders[results.index(won[0])][1]
                    for store in (one, two):
                        task = await store.get_task(task_id)
                        assert task is not None
                        assert (task.state, task.owner) == ("running", winner)
                        assert await store.task_history(task_id) == [won[0]]
                        assert won[0].seq == 1

        asyncio.run(asyncio.wait_for(main(), _TIMEOUT_S))

    # ------------------------------------------------------------ evaluations

    def test_ss21_evaluations_by_half_open_range(self, state_store_factory: StoreFactory) -> None:
        evaluations = [
            Evaluation("a1", _T0 + t, {"target": t / 10_000, "note": "ok"}, duration_us=t)
            for t in (1000, 2000, 3000, 4000)
        ]

        async def scenario(store: StateStore) -> None:
            for evaluation in reversed(evaluations):
                await store.add_evaluation(evaluation)
            await store.add_evaluation(Evaluation("a2", _T0 + 2000, {"target": None}))
            assert await store.list_evaluations("a1") == evaluations
            assert await store.list_evaluations("a1", _T0 + 2000, _T0 + 4000) == evaluations[1:3]
            assert await store.list_evaluations("a1", start=_T0 + 3000) == evaluations[2:]
            assert await store.list_evaluations("a1", end=_T0 + 2000) == evaluations[:1]
            assert await store.list_evaluations("a2") == [
                Evaluation("a2", _T0 + 2000, {"target": None})
            ]
            assert await store.list_evaluations("none") == []
            again = Evaluation("a1", _T0 + 1000, {"target": -1.0}, duration_us=7)
            await store.add_evaluation(again)
            assert await store.list_evaluations("a1") == [again, *evaluations[1:]]

        self.run_with(state_store_factory, scenario)

    # ------------------------------------------------------------ schedules

    def test_ss22_schedules_upsert_by_name(self, state_store_factory: StoreFactory) -> None:
        daily = ScheduleRecord("daily", "cron", {"expression": "0 0 * * *", "tz": "UTC"})
        often = ScheduleRecord("often", "interval", {"every": "5m"}, last_fired=_T0)

        async def scenario(store: StateStore) -> None:
            await store.save_schedule(often)
            await store.save_schedule(daily)
            await store.save_schedule(daily)
            assert await store.list_schedules() == [daily, often]
            fired = ScheduleRecord("daily", "cron", daily.spec, last_fired=_T0 + 86_400_000)
            await store.save_schedule(fired)
            assert await store.list_schedules() == [fired, often]

        self.run_with(state_store_factory, scenario)

    # ------------------------------------------------------------ reports

    def test_ss23_reports_newest_first(self, state_store_factory: StoreFactory) -> None:
        old = Report("r1", "daily", _T0, b"\x00\x01binary\xff", {"day": "2023-11-14"})
        new = Report("r2", "daily", _T0 + 1, "ünïcode".encode(), {"rows": [1, 2]})
        other = Report("r3", "backtest", _T0 + 2, b"", {})

        async def scenario(store: StateStore) -> None:
            for report in (new, other, old, old):
                await store.save_report(report)
            assert await store.get_report("r1") == old
            assert await store.get_report("missing") is None
            assert await store.list_reports() == [other, new, old]
            assert await store.list_reports(kind="daily") == [new, old]
            assert await store.list_reports(kind="none") == []
            replaced = Report("r1", "daily", _T0, b"again", {"day": "2023-11-14", "v": 2})
            await store.save_report(replaced)
            assert await store.get_report("r1") == replaced
            assert len(await store.list_reports()) == 3

        self.run_with(state_store_factory, scenario)

    # ------------------------------------------------------------ persistence

    def test_ss24_everything_survives_a_reopen(self, state_store_factory: StoreFactory) -> None:
        account = TradingAccount("main", "bitfinex", {"sandbox": True}, {"api_key": "k"})
        assignment = Assignment("a1", "sma", "main", "BTC/USDT", "1h", Decimal("0.5"), {"n": 3})
        order = _order("o1")
        fill = _fill("f1", "o1", _T0 + 1)
        evaluation = Evaluation("a1", _T0, {"target": 0.5}, 12)
        schedule = ScheduleRecord("nightly", "cron", {"expression": "0 3 * * *"})
        report = Report("r1", "daily", _T0, b"report", {"k": "v"})

        async def write(store: StateStore) -> dict[str, Any]:
            user = await store.add_user("alice")
            strategy = await store.save_strategy("sma", "lua", "return {}")
            await store.save_account(account)
            await store.save_assignment(assignment)
            await store.save_order(order)
            await store.add_fill(fill)
            await store.create_task(_task("01"))
            step = await store.record_transition("01", "queued", "running", "start", _T0 + 1)
            await store.add_evaluation(evaluation)
            await store.save_schedule(schedule)
            await store.save_report(report)
            return {"user": user, "strategy": strategy, "step": step}

        written = self.run_with(state_store_factory, write)

        async def read(store: StateStore) -> None:
            assert await store.get_user("alice") == written["user"]
            assert await store.get_strategy("sma") == written["strategy"]
            assert await store.save_strategy("sma", "lua", "return {}") == written["strategy"]
            assert await store.get_account("main") == account
            assert await store.list_assignments() == [assignment]
            assert await store.get_order("o1") == order
            assert await store.list_fills() == [fill]
            assert await store.add_fill(fill) is False
            task = await store.get_task("01")
            assert task is not None and task.state == "running"
            assert await store.task_history("01") == [written["step"]]
            assert await store.list_evaluations("a1") == [evaluation]
            assert await store.list_schedules() == [schedule]
            assert await store.get_report("r1") == report

        self.run_with(state_store_factory, read)
