"""Default plugin ``schedulers``: the built-in ``interval``, ``cron`` and ``candle_close``."""
