"""The core's own plugins, registered exactly like installed ones and disabled the same way
(``TRADER_DISABLE_PLUGINS=sqlite``). Anything they register can be replaced by config."""
