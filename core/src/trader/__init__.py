"""trader: a plugin-based, distributed algorithmic-trading framework.

The core holds the domain model (:mod:`trader.model`), the plugin host (:mod:`trader.plugins`)
with its hook specifications (:mod:`trader.hookspecs`), the interfaces plugins implement
(:mod:`trader.interfaces`), configuration (:mod:`trader.config`), the ``trader`` command
(:mod:`trader.cli`) and the default plugins (:mod:`trader.default_plugins`).
"""

__version__ = "0.1.0.dev0"
