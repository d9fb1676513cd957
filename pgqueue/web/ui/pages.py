"""The dashboard's pages (GET: they change nothing)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.responses import RedirectResponse, Response

import pgqueue
from pgqueue.web.state import QueueDep
from pgqueue.web.ui import access, views
from pgqueue.web.ui.access import AdminPoll, AdminSession
from pgqueue.web.ui.render import DashboardRoute, page

LEASE_LIMIT = 500
DEAD_LETTER_LIMIT = 100
TAIL_BATCH = 50

router = APIRouter(route_class=DashboardRoute)

# What the subscriber page says after an action (a code in the URL, never text from it).
NOTICES = {
    "replayed": "Replayed {count} dead letters: they are delivered again.",
    "purged": "Purged {count} dead letters.",
    "reset": "Reset applied: the position is now {count}.",
    "reset-stale": "Not applied: the subscriber was reset by someone else since the preview. "
    "Preview again.",
}


def rates(request: Request) -> views.PublishRates:
    meter: views.PublishRates | None = getattr(request.app.state, "ui_publish_rates", None)
    if meter is None:
        meter = request.app.state.ui_publish_rates = views.PublishRates()
    return meter


def notice(done: str | None, count: int) -> str | None:
    return NOTICES[done].format(count=count) if done in NOTICES else None


@router.get("/ui", name="ui_topics")
async def topics_page(request: Request, session: AdminSession, queue: QueueDep) -> Response:
    rows = await views.topic_rows(queue, rates(request))
    return page(request, "topics.html", {"session": session, "rows": rows})


@router.get("/ui/login")
async def login_page(request: Request, next: str = "/ui") -> Response:
    if not access.tokens_required(request):
        return RedirectResponse("/ui", status_code=303)
    session = access.Session(csrf=access.csrf_token(request), signed_in=False)
    return page(request, "login.html", {"session": session, "next_path": access.local_next(next)})


@router.get("/ui/topics/{topic}")
async def topic_page(
    request: Request, topic: str, session: AdminSession, queue: QueueDep
) -> Response:
    row = await views.topic_row(queue, rates(request), topic)
    context = {
        "session": session,
        "row": row,
        "subscribers": await views.subscriber_rows(queue, topic),
        "tail_after": views.tail_start(row.stats) - 1,
    }
    return page(request, "topic.html", context)


@router.get("/ui/topics/{topic}/tail")
async def tail(
    topic: str, _session: AdminPoll, queue: QueueDep, after: Annotated[int, Query(ge=0)] = 0
) -> Response:
    """The live tail's poll: messages after `after`, read from the log (no subscriber)."""
    messages = await queue.read(topic, from_offset=after + 1, limit=TAIL_BATCH)
    return JSONResponse({"messages": views.tail_entries(messages)})


@router.get("/ui/topics/{topic}/subscribers/{subscriber}")
async def subscriber_page(
    request: Request,
    topic: str,
    subscriber: str,
    session: AdminSession,
    queue: QueueDep,
    done: str | None = None,
    count: int = 0,
) -> Response:
    stats, info = await _subscriber(queue, topic, subscriber)
    leases = await queue.leases(topic, subscriber, limit=LEASE_LIMIT)
    context: dict[str, Any] = {
        "session": session,
        "notice": notice(done, count),
        "subscriber": info,
        "stats": stats,
        "leases": leases,
        "consumers": views.by_consumer(leases),
        "lease_limit": LEASE_LIMIT,
        "dead_letters": await queue.dead_letters(topic, subscriber, limit=DEAD_LETTER_LIMIT),
        "dead_letter_limit": DEAD_LETTER_LIMIT,
    }
    return page(request, "subscriber.html", context)


@router.get("/ui/topics/{topic}/subscribers/{subscriber}/reset")
async def reset_preview(
    request: Request,
    topic: str,
    subscriber: str,
    session: AdminSession,
    queue: QueueDep,
    to: str,
) -> Response:
    """A dry run: where the target puts the subscriber now; the page's form applies exactly
    that position, and only if nobody reset the subscriber in between."""
    stats, info = await _subscriber(queue, topic, subscriber)
    (result,) = await queue.reset(topic, to=to, subscriber=subscriber, dry_run=True)
    context = {
        "session": session,
        "result": result,
        "target": to,
        "stats": stats,
        "epoch": info.epoch,
    }
    return page(request, "reset.html", context)


async def _subscriber(
    queue: pgqueue.Queue, topic: str, name: str
) -> tuple[pgqueue.SubscriberStats, pgqueue.Subscriber]:
    found = await queue.subscriber_stats(topic, name)
    if not found:
        raise pgqueue.SubscriberNotFound(f"subscriber {name!r} of topic {topic!r} does not exist")
    return found[0], await queue.subscriber_by_id(found[0].subscriber_id)
