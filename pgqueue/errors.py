"""One root exception; database errors are translated once, here, by SQLSTATE."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import asyncpg


class PgQueueError(Exception):
    """Root of every error pgqueue raises."""

    code = "pgqueue_error"


class TopicNotFound(PgQueueError):
    code = "topic_not_found"


class TopicExists(PgQueueError):
    code = "topic_exists"


class SubscriberNotFound(PgQueueError):
    code = "subscriber_not_found"


class SubscriberExists(PgQueueError):
    code = "subscriber_exists"


class InvalidName(PgQueueError):
    code = "invalid_name"


class InvalidArgument(PgQueueError):
    code = "invalid_argument"


class PayloadTooLarge(PgQueueError):
    code = "payload_too_large"


class FieldTooLarge(PayloadTooLarge):
    """A message's headers, key or ids, a description or a filter is over its size limit."""

    code = "field_too_large"


class LimitReached(PgQueueError):
    """Creating one more topic or subscriber would pass the deployment's cap."""

    code = "limit_reached"


class InvalidPayload(PgQueueError):
    code = "invalid_payload"


class InvalidFilter(PgQueueError):
    code = "invalid_filter"


class InvalidPosition(PgQueueError):
    code = "invalid_position"


class TransactionRequired(PgQueueError):
    """The call commits for you, so it cannot run inside your transaction (or vice versa)."""

    code = "transaction_conflict"


class LeaseLost(PgQueueError):
    """An ack, nack or extension for a lease that expired and went to another consumer."""

    code = "lease_lost"


class DatabaseUnavailable(PgQueueError):
    code = "database_unavailable"


class SchemaMismatch(PgQueueError):
    """The database is not at the schema revision this pgqueue needs: run `pgqueue migrate`."""

    code = "schema_mismatch"


class ServerUnavailable(PgQueueError):
    """The pgqueue server (for QPublisher and QSubscriber) cannot be reached or did not answer."""

    code = "server_unavailable"


_BY_SQLSTATE: dict[str, type[PgQueueError]] = {
    "PQ001": TopicNotFound,
    "PQ002": TopicExists,
    "PQ003": SubscriberNotFound,
    "PQ004": SubscriberExists,
    "PQ005": InvalidName,
    "PQ006": InvalidArgument,
    "PQ007": PayloadTooLarge,
    "PQ008": InvalidPayload,
    "PQ009": InvalidFilter,
    "PQ010": InvalidPosition,
    "PQ011": TransactionRequired,
    "PQ012": LimitReached,
    "2D000": TransactionRequired,  # COMMIT inside a transaction block
    "22P02": InvalidPayload,  # invalid JSON text
    "22P05": InvalidPayload,  # \u0000 in jsonb
    "22003": InvalidArgument,  # numeric or interval out of range
    "22007": InvalidArgument,  # bad datetime
    "22008": InvalidArgument,  # datetime out of range
    "22023": InvalidArgument,  # invalid parameter value
    "54000": InvalidArgument,  # a value too large for an index (program_limit_exceeded)
}

# Details longer than this are cut: an error that quotes a 15 MB name helps nobody.
MAX_DETAIL_CHARS = 500
# The text of errors whose PostgreSQL message may name tables, indexes or constraints.
_PLAIN: dict[str, str] = {
    "54000": "a value is too large for the database to index; use a shorter one",
}
# asyncpg's own refusal of an argument: 'invalid input for query argument $3: 99... (...)'.
_ARGUMENT = re.compile(r"^invalid input for query argument \$\d+(?: in element #\d+ of .*?)?: ")


def translate(error: asyncpg.PostgresError) -> PgQueueError:
    """The PgQueueError for a database error (the original is kept as __cause__).

    Its text is what a client may see: the primary message only, never PostgreSQL's DETAIL
    or HINT (they name indexes, relations and rows), and our own hint for our own errors.
    """
    sqlstate = getattr(error, "sqlstate", "") or ""
    kind = _BY_SQLSTATE.get(sqlstate)
    if kind is None and sqlstate[:2] in ("08", "57"):
        kind = DatabaseUnavailable  # connection lost, shutdown, crash, recovery in progress
    if kind is None and isinstance(error, asyncpg.DataError):
        kind = InvalidArgument  # class 22, or refused by the driver before sending
    if kind is None:
        # Unexpected: the services answer it as an internal error (pgqueue.web.errors.told).
        kind = PgQueueError
    return kind(_detail(error, sqlstate))


def _detail(error: asyncpg.PostgresError, sqlstate: str) -> str:
    if sqlstate in _PLAIN:
        return _PLAIN[sqlstate]
    message = str(error.args[0]) if error.args else type(error).__name__
    message = shorten(_ARGUMENT.sub("invalid value: ", message))
    hint = getattr(error, "hint", None)
    if hint and sqlstate.startswith("PQ"):
        message = f"{message} ({hint})"
    return message


def shorten(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """text, cut to about `limit` characters."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise database and connection errors as PgQueueError subclasses."""
    try:
        yield
    except asyncpg.PostgresError as error:
        raise translate(error) from error
    except (OSError, asyncpg.exceptions.ConnectionDoesNotExistError) as error:
        # The connection is gone (the server restarted, crashed, or the network dropped).
        raise DatabaseUnavailable(str(error) or type(error).__name__) from error
    except asyncpg.InterfaceError as error:
        if "closed" not in str(error):  # misuse of the driver is a bug, not an outage
            raise
        raise DatabaseUnavailable(str(error)) from error
    except asyncpg.exceptions.InternalClientError as error:
        # A pooled connection that the server ended (its FATAL "shutting down" arrived while
        # the connection sat idle) fails its next query with "cannot switch to state ...;
        # another operation (2) is in progress" until the socket closes: an outage too.
        raise DatabaseUnavailable(f"connection ended by the server: {error}") from error
