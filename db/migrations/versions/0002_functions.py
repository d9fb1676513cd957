"""Stored functions, first release: applies the SQL frozen in 0002_functions/.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

db/functions/ holds the current text of every function. A release that changes one adds a new
revision with its own frozen copy, so replaying history from empty always gives the same result.
tests/test_migrations.py checks that the head revision's functions equal db/functions/.
"""

from __future__ import annotations

from pgqueue.db.migrations.helpers import run_frozen, run_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_frozen("0002_functions")


def downgrade() -> None:
    # Drops every routine in the schema; 0001 owns the tables and types.
    run_script(
        """
        DO $$
        DECLARE r record;
        BEGIN
            FOR r IN SELECT p.oid::regprocedure AS sig, p.prokind
                       FROM pg_proc p WHERE p.pronamespace = 'pgqueue'::regnamespace LOOP
                EXECUTE format('DROP %s %s',
                               CASE r.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                               r.sig);
            END LOOP;
        END $$;
        """
    )
