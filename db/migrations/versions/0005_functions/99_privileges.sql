-- Who may call what (SPEC §8). The objects belong to pgqueue_owner; the servers and the
-- applications that publish in their own transactions connect as pgqueue_runtime (or a role
-- granted it), which may only call the API: every function that touches a table is SECURITY
-- DEFINER, so the runtime role needs no right on any table and can run no DDL.
--
-- The internal functions (names starting with _) are not callable by the runtime role, except
-- the three the API procedures call as their caller (a procedure that COMMITs can be neither
-- SECURITY DEFINER nor pin its search_path) and two pure helpers the library calls
-- (_jsonb_elements splits a batch sent as one JSON array; _lock_class names a lock class).
-- after_restore is for the owner only (see db/functions/90_retention.sql).
REVOKE ALL ON ALL ROUTINES IN SCHEMA pgqueue FROM PUBLIC;
GRANT USAGE ON SCHEMA pgqueue TO pgqueue_runtime;

DO $$
DECLARE
    routine regprocedure;
BEGIN
    FOR routine IN
        SELECT p.oid FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'pgqueue'::regnamespace
           AND ((p.proname !~ '^_' AND p.proname <> 'after_restore')
                OR p.proname IN ('_publish_direct', '_assign_now', '_flush_at_commit',
                                '_jsonb_elements', '_lock_class'))
    LOOP
        -- Built from the catalog's own rendering of a signature, never from user input.
        EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO pgqueue_runtime', routine);
    END LOOP;
END
$$;
