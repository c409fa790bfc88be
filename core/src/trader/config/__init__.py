"""Configuration: one TOML file (``trader.toml``), validated on load (ARCHITECTURE §10).

:func:`load_config` reads and validates a file and reports every problem at once, each naming
the file, the key path and what is wrong. Secrets are :class:`SecretRef` references
(``"${ENV_VAR}"`` or ``"file:PATH"``), never literals. :func:`check_config` goes further and
checks the file against the installed plugins, as ``trader config check`` does.
"""

from trader.config.check import check_config
from trader.config.loader import (
    DEFAULT_FILE_NAME,
    SECTIONS,
    default_config,
    load_config,
    parse_config,
)
from trader.config.model import (
    AssignmentConfig,
    ClusterConfig,
    ComponentConfig,
    Config,
    ExchangeConfig,
    RiskConfig,
    ScheduleConfig,
    StorageConfig,
    StrategyConfig,
    default_data_dir,
)
from trader.config.options import validate_options
from trader.config.secrets import SecretRef, is_secret_option
from trader.config.template import STARTER_TOML

__all__ = [
    "DEFAULT_FILE_NAME",
    "SECTIONS",
    "STARTER_TOML",
    "AssignmentConfig",
    "ClusterConfig",
    "ComponentConfig",
    "Config",
    "ExchangeConfig",
    "RiskConfig",
    "ScheduleConfig",
    "SecretRef",
    "StorageConfig",
    "StrategyConfig",
    "check_config",
    "default_config",
    "default_data_dir",
    "is_secret_option",
    "load_config",
    "parse_config",
    "validate_options",
]
