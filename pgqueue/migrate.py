"""Running the alembic migrations from Python (the CLI, run_all.sh and the test fixture).

alembic's env.py runs its own event loop, so these block: from async code, call them through
asyncio.to_thread.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "alembic.ini"
FUNCTIONS_DIR = ROOT / "db" / "functions"


def alembic_config(dsn: str) -> Config:
    if not ALEMBIC_INI.exists():
        raise FileNotFoundError(f"{ALEMBIC_INI} not found: run from a pgqueue checkout")
    config = Config(str(ALEMBIC_INI))
    config.attributes["dsn"] = dsn
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(dsn), revision)


def function_sources() -> list[Path]:
    """The current function definitions, in the order they are applied."""
    return sorted(FUNCTIONS_DIR.glob("*.sql"))
