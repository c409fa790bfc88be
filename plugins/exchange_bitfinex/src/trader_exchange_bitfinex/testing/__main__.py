"""Run the fake Bitfinex on its own: ``python -m trader_exchange_bitfinex.testing --help``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from trader_exchange_bitfinex.testing.server import FakeBitfinex, FakeSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trader_exchange_bitfinex.testing",
        description="Serve a fake Bitfinex (REST and websocket, API v2) on 127.0.0.1.",
    )
    parser.add_argument("--seed", type=int, default=0, help="market seed (default 0)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second; 0 leaves the clock to POST /_fake/advance",
    )
    parser.add_argument("--history-hours", type=float, default=72.0, help="trade history (72)")
    parser.add_argument("--key", help="API key of an account to create")
    parser.add_argument("--secret", help="its API secret")
    parser.add_argument(
        "--balance",
        action="append",
        default=[],
        metavar="CODE=AMOUNT",
        help="exchange wallet balance of the account, e.g. USD=10000 (repeatable)",
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    settings = FakeSettings(seed=args.seed, history_ms=round(args.history_hours * 3_600_000))
    balances = {}
    for item in args.balance:
        code, _, amount = item.partition("=")
        balances[code] = amount
    async with FakeBitfinex(settings, port=args.port) as fake:
        if args.key:
            fake.add_account(args.key, args.secret or "", balances)
        if args.speed > 0:
            await fake.run_clock(speed=args.speed)
        print(
            json.dumps(
                {
                    "rest_url": fake.rest_url,
                    "ws_url": fake.ws_url,
                    "admin": fake.rest_url + "/_fake",
                }
            ),
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; print the URLs as one JSON line first."""
    args = _parser().parse_args(argv)
    if args.key and args.secret is None:
        print("--key needs --secret", file=sys.stderr)
        return 2
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
