"""Sandboxed Lua strategies for trader (lupa)."""

__version__ = "0.1.0.dev0"
