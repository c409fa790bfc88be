"""Conformance suites and fixtures for trader plugins (a pytest plugin, entry point ``pytest11``)."""
