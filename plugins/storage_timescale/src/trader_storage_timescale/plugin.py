"""Entry point of ``trader-storage-timescale`` (group ``trader``, name ``storage_timescale``).

It implements no hook yet: the capability arrives with its own issue, and until then the plugin
registers nothing rather than pretending to.
"""
