"""Bitfinex currency codes and symbols to and from trader's unified ones, both ways."""

from __future__ import annotations

from typing import Final

from trader.errors import ModelError

#: Bitfinex code -> common code (the spot ones; ``USTF0`` and friends are derivatives).
TO_COMMON: Final[dict[str, str]] = {
    "UST": "USDT",
    "UDC": "USDC",
    "TSD": "TUSD",
    "DSH": "DASH",
    "IOT": "IOTA",
    "EUT": "EURT",
    "XCH": "XCHF",
    "MNA": "MANA",
    "QTM": "QTUM",
    "STJ": "STORJ",
    "ALG": "ALGO",
    "AMP": "AMPL",
    "ATO": "ATOM",
    "DAT": "DATA",
    "EUS": "EURS",
    "QSH": "QASH",
    "VSY": "VSYS",
    "WAX": "WAXP",
    "BCHN": "BCH",
    "TERRAUST": "USTC",
}
#: Common code -> Bitfinex code.
TO_BITFINEX: Final[dict[str, str]] = {common: code for code, common in TO_COMMON.items()}


def common_code(code: str) -> str:
    """Map a Bitfinex currency code (``UST``) to the common one (``USDT``)."""
    upper = code.upper()
    return TO_COMMON.get(upper, upper)


def bitfinex_code(code: str) -> str:
    """Map a common currency code (``USDT``) to Bitfinex's (``UST``)."""
    upper = code.upper()
    return TO_BITFINEX.get(upper, upper)


def split_pair(pair: str) -> tuple[str, str]:
    """Split a Bitfinex pair (``BTCUST``, ``DOGE:USD``; no ``t``) into Bitfinex codes."""
    if ":" in pair:
        base, quote = pair.split(":", 1)
        return base, quote
    if len(pair) != 6:
        raise ModelError(f"cannot split Bitfinex pair {pair!r}: expected 6 letters or BASE:QUOTE")
    return pair[:3], pair[3:]


def symbol_of(pair_id: str) -> str:
    """Unified symbol of a Bitfinex trading pair id (``tBTCUST`` -> ``BTC/USDT``)."""
    pair = pair_id[1:] if pair_id.startswith("t") else pair_id
    base, quote = split_pair(pair)
    return f"{common_code(base)}/{common_code(quote)}"


def pair_id_of(symbol: str) -> str:
    """Bitfinex trading pair id of a unified symbol (``BTC/USDT`` -> ``tBTCUST``)."""
    base, quote = (bitfinex_code(part) for part in symbol.split("/", 1))
    if len(base) == 3 and len(quote) == 3:
        return f"t{base}{quote}"
    return f"t{base}:{quote}"


#: trader timeframe -> Bitfinex candle key part.
TIMEFRAMES: Final[dict[str, str]] = {
    "1m": "1m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1h": "1h",
    "3h": "3h",
    "6h": "6h",
    "12h": "12h",
    "1d": "1D",
    "1w": "7D",
    "2w": "14D",
    "1M": "1M",
}
