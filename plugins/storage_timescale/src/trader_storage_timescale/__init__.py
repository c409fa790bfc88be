"""PostgreSQL and TimescaleDB candle and state stores for trader."""

__version__ = "0.1.0.dev0"
