"""Settings: one pydantic-settings class, environment prefix PGQUEUE_, .env supported."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# "subscribe" is the old name of "consume", still accepted.
ScopeName = Literal["publish", "consume", "subscribe", "admin"]


class Settings(BaseSettings):
    """Every knob pgqueue reads; the README's Configuration table lists them."""

    model_config = SettingsConfigDict(env_prefix="PGQUEUE_", env_file=".env", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL DSN (postgresql://...). Unset: embedded server."
    )
    max_payload_bytes: int = Field(default=1_048_576, gt=0, description="Largest JSON payload.")
    poll_interval: float = Field(
        default=2.0, gt=0, description="Seconds a consumer waits without a NOTIFY before polling."
    )
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    default_lease: float = Field(default=30.0, gt=0, description="Seconds a claim is leased.")
    listener_reconnect_delay: float = Field(default=0.5, gt=0)
    connect_timeout: float = Field(
        default=60.0,
        ge=0,
        description="Seconds connect() and `pgqueue serve` keep retrying, with back-off, while "
        "PostgreSQL is unreachable at start (0: give up at the first failure).",
    )
    orphan_grace: float = Field(
        default=60.0,
        ge=0,
        description="Seconds an ephemeral subscriber must have had no live owner (a server "
        "killed without a clean shutdown) before the retention pass removes it.",
    )
    retention_interval: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between the servers' retention passes (0: none; call "
        "pgqueue.enforce_retention() yourself).",
    )
    publish_batching: bool = Field(
        default=True,
        description="Concurrent Queue.publish calls to one topic share a round trip.",
    )

    # -- database roles
    runtime_password: SecretStr | None = Field(
        default=None,
        repr=False,
        description="`pgqueue migrate` gives the runtime role (pgqueue_runtime) this password, "
        "for servers that connect over the network as it.",
    )

    # -- services ------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address the servers bind to.")
    port: int = Field(default=8888, ge=1, le=65535, description="Port of `pgqueue serve`.")
    api_tokens: dict[str, list[ScopeName] | dict[str, list[ScopeName]]] = Field(
        default_factory=dict,
        repr=False,
        description="Bearer tokens (or sha256:<hex> of them) and their scopes, as JSON: per "
        'topic pattern {"token": {"orders.*": ["publish"]}}, or for every topic '
        '{"token": ["publish"]}. Empty: no authentication.',
    )
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0, description="Largest HTTP request body."
    )
    ws_max_frame_bytes: int = Field(
        default=2 * 1024 * 1024, gt=0, description="Largest WebSocket frame a client may send."
    )
    ws_max_prefetch: int = Field(
        default=1000, ge=1, description="Most unacked messages one WebSocket may hold."
    )
    ws_send_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a WebSocket client may take to accept a frame before it is "
        "closed and its messages go back to the group.",
    )
    embedded_pgdata: str = Field(
        default=".pgqueue/pgdata", description="Data directory of the embedded PostgreSQL."
    )

    # -- access control ---------------------------------------------------------------------
    max_lease: float = Field(
        default=600.0,
        gt=0,
        description="Longest lease, in seconds, a claim may ask for on any protocol.",
    )
    insecure: bool = Field(
        default=False,
        description="Serve on a non-loopback address without tokens (everyone is admin).",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header names served besides loopback and PGQUEUE_HOST (patterns like "
        "*.example.com; * for any), comma-separated or a JSON list.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (https://app.example.com) allowed on WebSocket handshakes and "
        "state-changing requests besides the server's own; * for any.",
    )

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("api_tokens")
    @classmethod
    def _sha256_keys_are_digests(cls, tokens: dict[str, Any]) -> dict[str, Any]:
        for key in tokens:
            if key.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", key):
                raise ValueError(f"{key[:15]}...: a sha256: key has 64 hexadecimal digits")
        return tokens

    @model_validator(mode="after")
    def _default_lease_within_cap(self) -> Settings:
        if self.default_lease > self.max_lease:
            raise ValueError("default_lease must not exceed max_lease")
        return self

    def dsn(self) -> str | None:
        return self.database_url.get_secret_value() if self.database_url else None
