"""Least privilege: an owner role, a runtime role, and functions that cannot be hijacked
(issue 9, finding 11).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

- pgqueue_owner (NOLOGIN) owns the schema and everything in it; later revisions run as it.
- pgqueue_runtime (LOGIN) may only call the API: the functions that touch tables are SECURITY
  DEFINER, so partition DDL at publish time runs with the owner's rights, and the runtime role
  has no right on any table. Servers and applications connect as it (or as a role granted it).
- Every function pins `search_path = pg_catalog, pgqueue, pg_temp` (pg_temp last, or it is
  searched first for tables and types): a function planted in a schema on
  the caller's path (public.format, say) is never called by ours. The three procedures that
  COMMIT cannot pin it (PostgreSQL forbids SET there); they call only qualified names.
- topic_stats reports the log's size from the catalog instead of reading every message.
- For operators (issue 10): a lease records its consumer and since when (claim's new
  `consumer` argument), `list_leases` shows them, and subscriber_stats tells live leases from
  run-out ones and gives the lag in seconds.
- A refused topic or subscriber setting is named in words (_setting_refused), not by the
  CHECK constraint it broke.
- after_restore: in-transaction publishes get offsets again after a logical restore into
  another cluster (the log's round snapshots counted the old cluster's transactions).
- create_topic and create_subscriber take caps (max_topics, max_subscribers for durable ones),
  counted under an advisory lock so that concurrent creations cannot pass them (PQ012).
- subscribers_due: one cheap call per topic tells a process's idle consumers which
  subscribers have work, instead of each consumer claiming every poll interval.

Roles belong to the cluster, not the database: they are created once and kept by downgrade,
since other databases of the cluster may use them. Migrating needs a superuser or a role with
CREATEROLE that may become pgqueue_owner.
"""

from __future__ import annotations

from pgqueue.db.migrations.helpers import VERSIONS, run_frozen, run_previous, run_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CHANGED = tuple(path.stem for path in (VERSIONS / "0005_functions").glob("*.sql"))
ADDED = (
    "pgqueue._publish_direct(text, jsonb[], jsonb[], text[], text[], interval[], text[], text[])",
    "pgqueue._assign_now(text)",
    "pgqueue.list_leases(text, text, integer)",
    "pgqueue.subscribers_due(text, boolean)",
    "pgqueue.after_restore()",
    "pgqueue._setting_refused(text)",
)
# Changed arguments or results: dropped, then created from the frozen files.
REPLACED = (
    (
        "pgqueue.claim(text, text, integer, interval, bigint[], bigint[], boolean)",
        "pgqueue.claim(text, text, integer, interval, bigint[], bigint[], boolean, text)",
    ),
    ("pgqueue.subscriber_stats(text, text)", "pgqueue.subscriber_stats(text, text)"),
    (  # caps counted under a lock (issue 9, finding 7)
        "pgqueue.create_topic(text, text, interval, bigint, integer, interval, bigint)",
        "pgqueue.create_topic(text, text, interval, bigint, integer, interval, bigint, integer)",
    ),
    (
        "pgqueue.create_subscriber(text, text, text, bigint, timestamptz, jsonb, integer, "
        "interval, interval, boolean, integer)",
        "pgqueue.create_subscriber(text, text, text, bigint, timestamptz, jsonb, integer, "
        "interval, interval, boolean, integer, integer)",
    ),
)
COLUMNS_UP = (
    "ALTER TABLE pgqueue.delivery ADD COLUMN consumer text, ADD COLUMN leased_at timestamptz"
)
COLUMNS_DOWN = "ALTER TABLE pgqueue.delivery DROP COLUMN consumer, DROP COLUMN leased_at"

# CREATE ROLE has no IF NOT EXISTS; another database's migration may create them at once.
ROLES = """
    DO $$
    BEGIN
        CREATE ROLE pgqueue_owner NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END $$;
    DO $$
    BEGIN
        CREATE ROLE pgqueue_runtime LOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END $$;
"""

# Hands every object of the schema to `new_owner`. Partitions need their own ALTER; identity
# sequences follow their table.
OWNERSHIP = """
    DO $$
    DECLARE
        new_owner text := %(owner)s;
        r record;
    BEGIN
        EXECUTE format('ALTER SCHEMA pgqueue OWNER TO %%I', new_owner);
        FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
                  WHERE c.relnamespace = 'pgqueue'::regnamespace
                    AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'c')
                    AND NOT (c.relkind = 'S' AND EXISTS (
                            SELECT 1 FROM pg_depend d
                             WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                               AND d.refclassid = 'pg_class'::regclass
                               AND d.deptype IN ('a', 'i')))
        LOOP
            EXECUTE format('ALTER %%s %%s OWNER TO %%I',
                           CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                          WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'c' THEN 'TYPE'
                                          ELSE 'TABLE' END,
                           r.name, new_owner);
        END LOOP;
        FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
                  WHERE p.pronamespace = 'pgqueue'::regnamespace
        LOOP
            EXECUTE format('ALTER ROUTINE %%s OWNER TO %%I', r.name, new_owner);
        END LOOP;
    END $$;
"""

RUNTIME_READS_REVISION = "GRANT SELECT ON public.pgqueue_alembic_version TO pgqueue_runtime"


def upgrade() -> None:
    run_script(ROLES)
    for old, _ in REPLACED:
        run_script(f"DROP FUNCTION {old}")
    run_script(COLUMNS_UP)
    run_script(OWNERSHIP % {"owner": "'pgqueue_owner'"})
    # New routines must be created as the owner: SECURITY DEFINER runs with its creator's
    # rights, which must never be a superuser's.
    run_script("SET LOCAL ROLE pgqueue_owner")
    run_frozen("0005_functions")
    run_script("RESET ROLE")
    # Routines created from now on are not callable by everyone unless granted.
    run_script(
        "ALTER DEFAULT PRIVILEGES FOR ROLE pgqueue_owner REVOKE EXECUTE ON ROUTINES FROM PUBLIC"
    )
    run_script(RUNTIME_READS_REVISION)


def downgrade() -> None:
    run_script(f"REVOKE {RUNTIME_READS_REVISION.removeprefix('GRANT ').replace(' TO ', ' FROM ')}")
    run_script(
        "ALTER DEFAULT PRIVILEGES FOR ROLE pgqueue_owner GRANT EXECUTE ON ROUTINES TO PUBLIC"
    )
    for signature in (*ADDED, *(new for _, new in REPLACED)):
        run_script(f"DROP FUNCTION {signature}")
    run_script(COLUMNS_DOWN)
    run_previous(tuple(n for n in CHANGED if n != "99_privileges"), before="0005")
    run_script(
        """
        REVOKE ALL ON ALL ROUTINES IN SCHEMA pgqueue FROM pgqueue_runtime;
        REVOKE USAGE ON SCHEMA pgqueue FROM pgqueue_runtime;
        GRANT EXECUTE ON ALL ROUTINES IN SCHEMA pgqueue TO PUBLIC;
        """
    )
    run_script(OWNERSHIP % {"owner": "session_user"})
