"""Refusing to serve everyone everything: without tokens, loopback only unless --insecure."""

from __future__ import annotations

import ipaddress
import logging

from pgqueue.settings import Settings

log = logging.getLogger(__name__)

EXAMPLE_TOKEN = "change-me"  # the placeholder of .env.example


class UnsafeBind(Exception):
    """The server would expose the whole admin API; the message says how to fix it."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


def open_to_the_network(settings: Settings, host: str) -> bool:
    return not settings.api_tokens and not is_loopback(host)


def refusal(settings: Settings, host: str, *, insecure: bool = False) -> str | None:
    """Why serving `host` is refused, or None."""
    if EXAMPLE_TOKEN in settings.api_tokens:
        return (
            f"PGQUEUE_API_TOKENS still holds the example token {EXAMPLE_TOKEN!r}: replace it "
            "with a secret of your own (python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    if open_to_the_network(settings, host) and not (insecure or settings.insecure):
        return (
            f"refusing to serve {host} without tokens: anyone who reaches it could publish, "
            "read and delete everything. Set PGQUEUE_API_TOKENS (see the README's Security "
            "section), bind 127.0.0.1, or pass --insecure (PGQUEUE_INSECURE=true) to do it "
            "anyway."
        )
    return None


def check_bind(settings: Settings, host: str, *, insecure: bool = False) -> None:
    """Raises UnsafeBind where refusal() says so; warns loudly when serving an open API."""
    reason = refusal(settings, host, insecure=insecure)
    if reason is not None:
        raise UnsafeBind(reason)
    if open_to_the_network(settings, host):
        log.warning(
            "INSECURE: serving %s with no tokens (--insecure): every client that reaches "
            "this address may publish, read, reset and delete every topic",
            host,
        )
