"""Options of the ``scylla`` candle store (``[storage.candles]`` in ``trader.toml``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trader.config.secrets import SecretRef

__all__ = ["Consistency", "Replication", "ScyllaCandleOptions"]

#: Consistency levels a read or a write may ask for (names of ``cassandra.ConsistencyLevel``).
Consistency = Literal[
    "ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"
]

#: Unquoted CQL identifiers: case-insensitive, so only lower case is accepted here.
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
#: Datacenter names as snitches report them ("dc1", "us-east", "eu_west.1").
_DATACENTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Replication(BaseModel):
    """How the keyspace is replicated when the store creates it.

    ``SimpleStrategy`` takes ``replication_factor`` (one datacenter, tests and development);
    ``NetworkTopologyStrategy`` takes ``datacenters``, a replica count per datacenter name
    (production).
    """

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["SimpleStrategy", "NetworkTopologyStrategy"] = "SimpleStrategy"
    replication_factor: int | None = Field(
        default=None, ge=1, le=32, description="SimpleStrategy: replicas of each row (default 1)."
    )
    datacenters: dict[str, int] = Field(
        default_factory=dict,
        description="NetworkTopologyStrategy: replicas per datacenter, such as {dc1 = 3}.",
    )

    @field_validator("datacenters")
    @classmethod
    def _datacenters(cls, value: dict[str, int]) -> dict[str, int]:
        for name, count in value.items():
            if _DATACENTER.match(name) is None:
                raise ValueError(
                    f"datacenter name {name!r} may hold only letters, digits, '_', '-' and '.'"
                )
            if not 0 <= count <= 32:
                raise ValueError(f"datacenter {name}: replicas must be 0 to 32, not {count}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Replication:
        if self.strategy == "SimpleStrategy":
            if self.datacenters:
                raise ValueError(
                    "SimpleStrategy takes replication_factor, not datacenters; use "
                    "strategy = 'NetworkTopologyStrategy' for replicas per datacenter"
                )
        elif self.replication_factor is not None:
            raise ValueError(
                "NetworkTopologyStrategy takes datacenters (replicas per datacenter), not "
                "replication_factor"
            )
        elif not self.datacenters or not any(self.datacenters.values()):
            raise ValueError(
                "NetworkTopologyStrategy needs datacenters with at least one replica, such as "
                "{dc1 = 3}"
            )
        return self

    def cql(self) -> str:
        """The replication map as CQL, such as ``{'class': 'SimpleStrategy', ...}``."""
        if self.strategy == "SimpleStrategy":
            factor = self.replication_factor or 1
            return f"{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}"
        parts = ", ".join(f"'{name}': {count}" for name, count in sorted(self.datacenters.items()))
        return f"{{'class': 'NetworkTopologyStrategy', {parts}}}"


class ScyllaCandleOptions(BaseModel):
    """Where the cluster is and how the ``scylla`` candle store talks to it."""

    # A mistaken literal password must not be echoed back by a validation error.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    contact_points: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"],
        min_length=1,
        description="Hosts (names or addresses) the driver first connects to, to learn the ring.",
    )
    port: int = Field(default=9042, ge=1, le=65535, description="The native protocol port.")
    keyspace: str = Field(
        default="trader",
        description="Keyspace holding the candle tables (lower case letters, digits and _).",
    )
    schema_creation: Literal["keyspace_and_tables", "tables"] = Field(
        default="keyspace_and_tables",
        description=(
            "'keyspace_and_tables': create the keyspace (with replication) and the tables when "
            "missing; 'tables': the keyspace is managed elsewhere, create only the tables."
        ),
    )
    replication: Replication = Field(
        default_factory=Replication,
        description="Replication of the keyspace when the store creates it.",
    )
    read_consistency: Consistency = Field(
        default="LOCAL_QUORUM", description="Consistency level of every read."
    )
    write_consistency: Consistency = Field(
        default="LOCAL_QUORUM", description="Consistency level of every write and delete."
    )
    username: str | None = Field(default=None, description="User for password authentication.")
    password: SecretRef | None = Field(
        default=None,
        description="A secret reference (${ENV_VAR} or file:PATH) to the user's password.",
    )
    local_datacenter: str | None = Field(
        default=None,
        description=(
            "The datacenter this process is in: requests go to its replicas first. Unset: the "
            "datacenter of the first contact point reached (the driver logs a warning)."
        ),
    )
    concurrency: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Requests a store keeps in flight at once (writes, pages of reads).",
    )
    page_size: int = Field(default=5000, ge=100, le=100_000, description="Rows per page of a read.")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="How long opening a connection to a node may take."
    )
    request_timeout_s: float = Field(
        default=12.0,
        gt=0,
        description=(
            "How long the driver waits for one request (it should exceed the server's own "
            "read and write timeouts, so that those are reported and retried first)."
        ),
    )
    retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description=(
            "How often an idempotent request is retried after a timeout, an unavailable "
            "replica set or a node error."
        ),
    )

    @field_validator("keyspace")
    @classmethod
    def _keyspace(cls, value: str) -> str:
        if _IDENTIFIER.match(value) is None:
            raise ValueError(
                f"keyspace {value!r} must start with a lower case letter and hold only lower "
                "case letters, digits and _ (48 at most)"
            )
        return value

    @field_validator("contact_points")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        hosts = [host.strip() for host in value]
        if any(not host for host in hosts):
            raise ValueError("contact_points must not hold empty host names")
        return hosts

    @model_validator(mode="after")
    def _credentials(self) -> ScyllaCandleOptions:
        if (self.username is None) != (self.password is None):
            raise ValueError(
                "username and password go together: set both for password authentication, or "
                "neither"
            )
        return self

    @property
    def label(self) -> str:
        """``host[,host...]:port/keyspace``, for messages (never the password)."""
        hosts = ",".join(self.contact_points[:3]) + ("..." if len(self.contact_points) > 3 else "")
        return f"{hosts}:{self.port}/{self.keyspace}"
