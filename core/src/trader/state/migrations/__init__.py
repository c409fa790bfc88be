"""Versioned migrations of the state store's schema (Alembic), for any SQLAlchemy database.

The migration scripts live beside this module (``env.py`` and ``versions/``) and use only
dialect-neutral operations, in batch mode where SQLite needs it, so SQLite and PostgreSQL stores
share them. Stores call :func:`upgrade_to_head` from ``open()``; the functions here need no
``alembic.ini``. Alembic's own command line works too, given an ``alembic.ini`` holding
``[alembic]`` / ``script_location = trader.state:migrations``::

    alembic -x url=sqlite:///state.sqlite upgrade head
    alembic -x url=postgresql:// upgrade head --sql     # print the SQL instead

The applied revision is kept in the table :data:`VERSION_TABLE`, so the state store can share a
database with other users of Alembic.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, text

from trader.errors import StorageError

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
"""The folder holding ``env.py`` and ``versions/``."""

VERSION_TABLE = "state_schema_version"
"""The table in which Alembic records the state schema's revision."""

_POSTGRES_LOCK_KEY = 0x7472_6164_6572_5353  # "traderSS": one advisory lock for state migrations


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """Build an Alembic configuration for the state schema.

    Give ``connection`` to migrate over an open connection (its transaction is used as is), or
    ``url`` to let ``env.py`` connect by itself; with neither, only offline (``--sql``) mode works.
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision of the state schema that this version of trader knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its revisions
        raise StorageError("the state schema has no migrations: the installation is broken")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database behind ``connection`` is at; ``None`` when it has none yet."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade_to_head(connection: Connection) -> bool:
    """Migrate the database behind ``connection`` to :func:`head_revision`, inside the caller's
    transaction; return whether anything was applied.

    On PostgreSQL a transaction-scoped advisory lock serialises concurrent callers; on SQLite the
    caller is expected to hold the write lock (``BEGIN IMMEDIATE``). Either way the revision is
    read again under the lock, so two processes opening one store never both migrate it.
    Raises :class:`~trader.errors.StorageError` when the database is at a revision this version
    of trader does not know (it was migrated by a newer trader).
    """
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_LOCK_KEY})
    current = current_revision(connection)
    config = alembic_config(connection=connection)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    if current == head:
        return False
    if current is not None:
        try:
            script.get_revision(current)
        except CommandError:
            raise StorageError(
                f"the state database is at schema revision {current!r}, which this version of "
                "trader does not know: it was written by a newer trader; upgrade trader"
            ) from None
    command.upgrade(config, "head")
    return True
