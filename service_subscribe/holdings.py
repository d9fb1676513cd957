"""What one WebSocket connection holds: its leases, and the room they leave under prefetch."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pgqueue


@dataclass
class Held:
    token: int
    epoch: int
    expires: float  # time.monotonic() when the lease runs out (a little after the database's)
    sent: bool = False  # the frame went (or may have gone) to the client


class Holdings:
    """Leases a connection holds, by offset.

    Room under prefetch counts only leases that have not run out: a lease the client never
    acks (or whose ack failed, say during a database restart) stops counting once it expires,
    when the message goes back to the group anyway, so the connection never waits for room
    forever. The entry itself stays a while longer, so that a late ack still carries its
    token to the database (which accepts it unless the message was claimed again meanwhile).
    """

    def __init__(self, prefetch: int, lease: float) -> None:
        self.prefetch = prefetch
        self.lease = lease
        self.held: dict[int, Held] = {}

    def __len__(self) -> int:
        return len(self.held)

    def __contains__(self, offset: int) -> bool:
        return offset in self.held

    def claimed(self, messages: list[pgqueue.Message]) -> None:
        """Ours from the claim on, until acked, nacked, cleared by a reset or given back."""
        expires = time.monotonic() + self.lease
        for message in messages:
            self.held[message.offset] = Held(message.lease_token, message.epoch, expires)

    def sent(self, offset: int) -> None:
        if (entry := self.held.get(offset)) is not None:
            entry.sent = True

    def room(self, *, settling: int = 0) -> int:
        """How many more messages fit; `settling` held ones are about to be acked."""
        now = time.monotonic()
        self._forget_long_expired(now)
        live = sum(1 for entry in self.held.values() if entry.expires > now)
        return self.prefetch - live + settling

    def until_a_lease_expires(self) -> float:
        """Seconds until the next held lease runs out (and room opens), at least 0."""
        now = time.monotonic()
        live = [entry.expires for entry in self.held.values() if entry.expires > now]
        return max(min(live) - now, 0.0) if live else 0.0

    def tokens(self, offsets: list[int]) -> tuple[list[int], list[int], list[int]]:
        """(known offsets, their lease tokens, unknown offsets)."""
        known = [o for o in offsets if o in self.held]
        unknown = [o for o in offsets if o not in self.held]
        return known, [self.held[o].token for o in known], unknown

    def pop(self, offset: int) -> Held | None:
        return self.held.pop(offset, None)

    def drop(self, offsets: list[int]) -> None:
        for offset in offsets:
            self.held.pop(offset, None)

    def restore(self, offset: int, entry: Held) -> None:
        self.held.setdefault(offset, entry)

    def reset_to(self, epoch: int) -> None:
        """A reset cleared every lease claimed before it."""
        self.held = {o: e for o, e in self.held.items() if e.epoch >= epoch}

    def take(self, *, sent: bool) -> tuple[list[int], list[int]]:
        """Removes and returns (offsets, tokens) of the held messages sent (or not)."""
        offsets = [o for o, e in self.held.items() if e.sent == sent]
        tokens = [self.held.pop(o).token for o in offsets]
        return offsets, tokens

    def _forget_long_expired(self, now: float) -> None:
        # A client that never acks must not grow this without bound: a lease that ran out a
        # whole lease ago is forgotten (a later ack of it is answered unknown_offset).
        stale = [o for o, e in self.held.items() if e.expires + self.lease < now]
        for offset in stale:
            del self.held[offset]
