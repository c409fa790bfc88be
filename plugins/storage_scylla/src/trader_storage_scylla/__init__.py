"""ScyllaDB and Cassandra candle store for trader."""

__version__ = "0.1.0.dev0"
