"""Running the alembic migrations from Python (the CLI, run_all.sh and the test fixture).

alembic's env.py runs its own event loop, so these block: from async code, call them through
asyncio.to_thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from alembic import command
from alembic.config import Config

from pgqueue.schema import RUNTIME_ROLE, SCHEMA_REVISION, VERSION_TABLE

__all__ = ["RUNTIME_ROLE", "SCHEMA_REVISION"]

# The migrations and SQL ship inside the package (pgqueue/db links to the checkout's db/), so
# `pip install pgqueue` + `pgqueue migrate` works anywhere.
DB_DIR = Path(str(resources.files("pgqueue") / "db"))
MIGRATIONS_DIR = DB_DIR / "migrations"
FUNCTIONS_DIR = DB_DIR / "functions"


def alembic_config(dsn: str) -> Config:
    """The same configuration as alembic.ini (kept for the alembic command in a checkout),
    without needing the file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_table", VERSION_TABLE)
    config.set_main_option("version_table_schema", "public")
    config.attributes["dsn"] = dsn
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(dsn), revision)


def function_sources() -> list[Path]:
    """The current function definitions, in the order they are applied."""
    return sorted(FUNCTIONS_DIR.glob("*.sql"))


def schema_source() -> Path:
    """The current tables, indexes, types and roles (db/schema.sql)."""
    return DB_DIR / "schema.sql"


def as_role(dsn: str, role: str) -> str:
    """The same DSN with another user and no password: for a server that trusts local
    connections, such as the embedded one."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677), computed
    here so that neither the password nor SQL built from it is ever sent."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


async def set_runtime_password(dsn: str, password: str) -> None:
    """Lets the runtime role log in with `password` (compose, any server that is not local)."""
    verifier = scram_verifier(password)
    # ALTER ROLE takes no parameters; the verifier is base64 and digits only, checked here.
    if not VERIFIER.fullmatch(verifier):
        raise ValueError("unexpected verifier")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER ROLE {RUNTIME_ROLE} PASSWORD '{verifier}'")
    finally:
        await conn.close()


VERIFIER = re.compile(r"SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+")
