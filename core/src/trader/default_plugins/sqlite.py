"""Default plugin ``sqlite``: the embedded SQLite candle store and state store."""
