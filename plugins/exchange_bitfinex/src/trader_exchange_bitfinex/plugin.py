"""Entry point of ``trader-exchange-bitfinex`` (group ``trader``, name ``exchange_bitfinex``).

It implements no hook yet: the capability arrives with its own issue, and until then the plugin
registers nothing rather than pretending to.
"""
