"""Entry point of ``trader-storage-scylla`` (group ``trader``, name ``storage_scylla``).

It implements no hook yet: the capability arrives with its own issue, and until then the plugin
registers nothing rather than pretending to.
"""
