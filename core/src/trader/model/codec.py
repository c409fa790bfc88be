"""msgpack encoding of model objects: ``unpack(pack(x)) == x`` for every model type.

Decimals and integers beyond 64 bits travel as decimal strings (exact), timeframes as their
spelling, dataclasses as the list of their field values (compact and fast), and
:class:`CandleArrays` as raw little-endian column bytes. Unknown extension codes or type names
raise :class:`~trader.errors.ModelError`; they never crash a receiver with anything else.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Final

import msgpack
import numpy as np

from trader.errors import ModelError
from trader.model.account import Balance, Decision, Event, OrderCheck, Position
from trader.model.candle import Candle, CandleArrays, SeriesKey
from trader.model.market import Market, Precision
from trader.model.order import Fill, Order, OrderIntent
from trader.model.timeframe import Timeframe

_EXT_DECIMAL: Final = 1
_EXT_MODEL: Final = 2
_EXT_TIMEFRAME: Final = 3
_EXT_COLUMNS: Final = 4
_EXT_BIG_INT: Final = 5

#: Every model type that travels, by its wire name. The name, not the Python path, is the
#: contract: renaming a class must keep its wire name.
MODEL_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        Candle,
        SeriesKey,
        Market,
        Precision,
        Order,
        Fill,
        OrderIntent,
        Balance,
        Position,
        Decision,
        OrderCheck,
        Event,
    )
}
_FIELDS: Final = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in MODEL_TYPES.values()
}
_COLUMN_DTYPES: Final = ("<i8", "<f8", "<f8", "<f8", "<f8", "<f8", "|b1")


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode("ascii"))
    if isinstance(obj, Timeframe):
        return msgpack.ExtType(_EXT_TIMEFRAME, str(obj).encode("ascii"))
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, int):  # only integers beyond 64 bits reach here
        return msgpack.ExtType(_EXT_BIG_INT, str(obj).encode("ascii"))
    if isinstance(obj, CandleArrays):
        columns = [
            np.ascontiguousarray(getattr(obj, name), dtype=dtype).tobytes()
            for name, dtype in zip(CandleArrays.COLUMNS, _COLUMN_DTYPES, strict=True)
        ]
        return msgpack.ExtType(_EXT_COLUMNS, msgpack.packb(columns))
    cls = type(obj)
    if cls in _FIELDS:
        values = [getattr(obj, name) for name in _FIELDS[cls]]
        return msgpack.ExtType(
            _EXT_MODEL, msgpack.packb([cls.__name__, values], default=_default, use_bin_type=True)
        )
    raise TypeError(f"cannot encode {cls.__name__} in a trader message")


def _ext_hook(code: int, data: bytes) -> Any:
    try:
        if code == _EXT_DECIMAL:
            return Decimal(data.decode("ascii"))
        if code == _EXT_BIG_INT:
            return int(data.decode("ascii"))
        if code == _EXT_TIMEFRAME:
            return Timeframe.parse(data.decode("ascii"))
        if code == _EXT_COLUMNS:
            raw = msgpack.unpackb(data)
            columns = [
                np.frombuffer(chunk, dtype=dtype).copy()
                for chunk, dtype in zip(raw, _COLUMN_DTYPES, strict=True)
            ]
            return CandleArrays(*columns)
        if code == _EXT_MODEL:
            name, values = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False)
            cls = MODEL_TYPES.get(name)
            if cls is None:
                raise ModelError(f"unknown model type {name!r} in message")
            fields = _FIELDS[cls]
            if len(values) != len(fields):
                raise ModelError(f"{name} has {len(fields)} fields, message carries {len(values)}")
            if cls is Decision:
                values[3] = tuple(values[3])
            elif cls is OrderCheck:
                values[2], values[3] = tuple(values[2]), tuple(values[3])
            return cls(*values)
    except ModelError:
        raise
    except (ValueError, TypeError, InvalidOperation, UnicodeDecodeError) as error:
        raise ModelError(f"malformed model value (extension {code}): {error}") from None
    raise ModelError(f"unknown msgpack extension code {code}")


def pack(obj: Any) -> bytes:
    """Encode a model object (or plain data containing model objects) to msgpack bytes."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Decode bytes made by :func:`pack`; raise :class:`~trader.errors.ModelError` if malformed."""
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except ModelError:
        raise
    except Exception as error:  # msgpack raises several unrelated types on bad bytes
        raise ModelError(f"malformed message: {type(error).__name__}: {error}") from None
