"""What revisions share: running a frozen SQL script through alembic's connection."""

from __future__ import annotations

from pathlib import Path

from alembic import op

try:  # SQLAlchemy 2.1
    from sqlalchemy.util import await_ as _await
except ImportError:  # SQLAlchemy 2.0
    from sqlalchemy.util import await_only as _await

VERSIONS = Path(__file__).parent / "versions"


def run_script(sql: str) -> None:
    """Execute a multi-statement script as one simple-protocol query.

    op.execute would prepare it (one statement only) and treat `:name` inside PL/pgSQL as a bind
    parameter; the driver connection runs the text exactly as psql would.
    """
    driver = op.get_bind().connection.driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter opens the revision's transaction at its first statement
        # of its own; without one, the driver would run this script in autocommit, and a
        # failing revision would leave half of itself applied (and SET LOCAL would do nothing).
        op.execute("SELECT 1")
    _await(driver.execute(sql))


def run_frozen(revision_dir: str, only: tuple[str, ...] | None = None) -> None:
    """Apply the .sql files frozen beside a revision (all, or those named), in name order."""
    for path in sorted((VERSIONS / revision_dir).glob("*.sql")):
        if only is None or path.stem in only:
            run_script(path.read_text())


def run_previous(files: tuple[str, ...], before: str) -> None:
    """Apply, for each named file, its latest frozen copy older than revision `before`: what
    a revision's downgrade puts back for the files it changed."""
    older = sorted(
        (d for d in VERSIONS.iterdir() if d.is_dir() and d.name.split("_")[0] < before),
        reverse=True,
    )
    for name in sorted(files):
        copy = next((d / f"{name}.sql" for d in older if (d / f"{name}.sql").exists()), None)
        if copy is not None:
            run_script(copy.read_text())
