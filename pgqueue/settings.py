"""Settings: one pydantic-settings class, environment prefix PGQUEUE_, .env supported."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pgqueue.limits import DEFAULT_LIMITS, MAX_INDEXED_BYTES

# "subscribe" is the old name of "consume", still accepted.
ScopeName = Literal["publish", "consume", "subscribe", "admin"]


class Settings(BaseSettings):
    """Every knob pgqueue reads; the README's Configuration table lists them."""

    model_config = SettingsConfigDict(env_prefix="PGQUEUE_", env_file=".env", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN (postgresql://...). Unset: `pgqueue serve` starts an "
        "embedded server, and the library and CLI use the one running from the current "
        "directory (see dsn()).",
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

    # -- input limits (sizes in UTF-8 bytes; see pgqueue.limits) ------------------------
    max_headers_bytes: int = Field(
        default=DEFAULT_LIMITS.headers,
        gt=0,
        description="Largest total size of a message's headers.",
    )
    max_key_bytes: int = Field(default=DEFAULT_LIMITS.key, gt=0, description="Largest message key.")
    max_idempotency_key_bytes: int = Field(
        default=DEFAULT_LIMITS.idempotency_key,
        gt=0,
        le=MAX_INDEXED_BYTES,
        description=f"Largest idempotency key (at most {MAX_INDEXED_BYTES}: it is indexed).",
    )
    max_correlation_id_bytes: int = Field(
        default=DEFAULT_LIMITS.correlation_id, gt=0, description="Largest correlation id."
    )
    max_reply_to_bytes: int = Field(
        default=DEFAULT_LIMITS.reply_to, gt=0, description="Largest reply_to."
    )
    max_description_bytes: int = Field(
        default=DEFAULT_LIMITS.description, gt=0, description="Largest topic description."
    )
    max_filter_bytes: int = Field(
        default=DEFAULT_LIMITS.filter,
        gt=0,
        description="Largest subscriber filter (its JSON text).",
    )
    max_topics: int = Field(
        default=1000, ge=0, description="Most topics the database may hold (0: no cap)."
    )
    max_subscribers_per_topic: int = Field(
        default=100,
        ge=0,
        description="Most durable subscribers one topic may have (0: no cap). Ephemeral "
        "WebSocket subscribers do not count: they end with their connection.",
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
        default=".pgqueue/pgdata",
        description="Data directory of the embedded PostgreSQL (relative: to the current "
        "directory).",
    )

    # -- transport: connections, HTTP heads and bodies, WebSockets, per-token rates ----------
    http_max_header_bytes: int = Field(
        default=32_768,
        ge=1024,
        description="Largest request head (URL and headers together); more is answered 431.",
    )
    http_max_headers: int = Field(
        default=100, ge=1, description="Most header lines in one request; more is answered 431."
    )
    http_header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has from connecting (or from the first byte of a later "
        "request) to the end of its request head; a slower one gets 408 and is disconnected.",
    )
    http_body_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a client has from the end of a request head to the end of its "
        "body; a slower one gets 408 (or, once answered, is disconnected).",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections (HTTP and WebSocket) per server process; a request or "
        "WebSocket handshake beyond it is answered 503.",
    )
    ws_max_connections: int = Field(
        default=500,
        ge=1,
        description="Open WebSockets per server process; a handshake beyond it is answered 503.",
    )
    ws_max_per_token: int = Field(
        default=100,
        ge=1,
        description="Open WebSockets per token (per client address when no tokens are "
        "configured) and process; a handshake beyond it is answered 429.",
    )
    publish_rate: float = Field(
        default=1000.0,
        ge=0,
        description="Publish calls per second per token (REST, batch, v1, WebSocket frame; a "
        "batch counts once), per process; 0: no limit.",
    )
    publish_burst: int = Field(
        default=2000, ge=1, description="Publish calls a token may make at once above the rate."
    )
    admin_rate: float = Field(
        default=50.0,
        ge=0,
        description="Admin calls (topics, subscribers, reset, dead letters, WebSocket seek) "
        "per second per token, per process; 0: no limit.",
    )
    admin_burst: int = Field(
        default=200, ge=1, description="Admin calls a token may make at once above the rate."
    )

    # -- metrics
    metrics_cache: float = Field(
        default=1.0,
        ge=0,
        description="Seconds a /metrics scrape reuses the database statistics the one before "
        "read (0: every scrape reads them).",
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
        """The database pgqueue connects to: PGQUEUE_DATABASE_URL; unset, the embedded server
        that `pgqueue serve` runs from the current directory (embedded_pgdata), as the runtime
        role; None if there is neither. The one place the library and the CLI look for the
        embedded server, and only when PGQUEUE_DATABASE_URL is unset."""
        if self.database_url:
            return self.database_url.get_secret_value()
        from pgqueue import embedded
        from pgqueue.migrate import RUNTIME_ROLE

        return embedded.dsn(Path(self.embedded_pgdata), RUNTIME_ROLE)
