"""The dashboard's actions: POST forms with a CSRF token, answered with a redirect to a page
(so a reload does not repeat them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from pgqueue.web.state import QueueDep
from pgqueue.web.ui import access
from pgqueue.web.ui.access import AdminSession, CheckedForm
from pgqueue.web.ui.render import DashboardRoute, page, subscriber_path

router = APIRouter(route_class=DashboardRoute, dependencies=[CheckedForm])

OptionalOffset = Annotated[int | None, Form(ge=1)]


def back_to(topic: str, subscriber: str, done: str, count: int) -> Response:
    location = f"{subscriber_path(topic, subscriber)}?done={done}&count={count}"
    return RedirectResponse(location, status_code=303)


@router.post("/ui/login")
async def login(
    request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = "/ui"
) -> Response:
    refusal = access.token_refusal(request, token)
    if refusal is not None:
        message = (
            "That token is not an admin token: the dashboard needs one."
            if refusal == 403
            else "Unknown token."
        )
        session = access.Session(csrf=access.csrf_token(request), signed_in=False)
        context = {"session": session, "next_path": access.local_next(next), "notice": message}
        return page(request, "login.html", context, status_code=refusal)
    response = RedirectResponse(access.local_next(next), status_code=303)
    access.remember_token(request, response, token)
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    response = RedirectResponse("/ui/login" if access.tokens_required(request) else "/ui", 303)
    access.forget_token(request, response)
    return response


@router.post("/ui/topics/{topic}/subscribers/{subscriber}/dead-letters/replay")
async def replay(
    topic: str,
    subscriber: str,
    _session: AdminSession,
    queue: QueueDep,
    offset: OptionalOffset = None,
) -> Response:
    """One dead letter (offset) or all of them, delivered again."""
    count = await queue.replay_dead_letters(topic, subscriber, first=offset, last=offset)
    return back_to(topic, subscriber, "replayed", count)


@router.post("/ui/topics/{topic}/subscribers/{subscriber}/dead-letters/purge")
async def purge(
    topic: str,
    subscriber: str,
    _session: AdminSession,
    queue: QueueDep,
    offset: OptionalOffset = None,
) -> Response:
    count = await queue.purge_dead_letters(topic, subscriber, first=offset, last=offset)
    return back_to(topic, subscriber, "purged", count)


@router.post("/ui/topics/{topic}/subscribers/{subscriber}/reset")
async def apply_reset(
    topic: str,
    subscriber: str,
    _session: AdminSession,
    queue: QueueDep,
    offset: Annotated[int, Form(ge=1)],
    if_epoch: Annotated[int, Form(ge=0)],
) -> Response:
    """Applies a previewed reset: to exactly the previewed offset, and only if the subscriber
    was not reset since the preview (if_epoch)."""
    (result,) = await queue.reset(topic, to=offset, subscriber=subscriber, if_epoch=if_epoch)
    if not result.applied:
        return back_to(topic, subscriber, "reset-stale", 0)
    return back_to(topic, subscriber, "reset", result.new_position)
