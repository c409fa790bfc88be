"""Entry point of ``trader-strategy-lua`` (group ``trader``, name ``strategy_lua``).

It implements no hook yet: the capability arrives with its own issue, and until then the plugin
registers nothing rather than pretending to.
"""
