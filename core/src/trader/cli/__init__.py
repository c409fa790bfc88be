"""The ``trader`` command line."""
