"""The operator dashboard at /ui, driven in a real headless Chromium against a real server.

Chromium is Debian's (`apt-get install chromium`; .ci/run installs it), driven by Playwright
without a browser download of its own. Set PGQUEUE_SCREENSHOTS=docs/screenshots to save the
screenshots the docs show.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright, expect

import pgqueue
from pgqueue.settings import Settings
from tests.services.conftest import RunningServer, serving

# Read at import: the suite's autouse fixture hides PGQUEUE_* variables from the tests.
CHROMIUM = Path(os.environ.get("PGQUEUE_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = os.environ.get("PGQUEUE_SCREENSHOTS")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
REPO = Path(__file__).resolve().parents[2]
TOKENS = {"admin-token": ["admin"], "pub-token": ["publish"]}


@pytest.fixture
def chromium() -> Path:
    """The system's Chromium: skipped without it, except in CI, where .ci/run installs it."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"no browser at {CHROMIUM}: .ci/run installs Debian's chromium")
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    opened.set_default_timeout(15_000)

    async def say_yes(dialog: Dialog) -> None:
        await dialog.accept()

    opened.on("dialog", say_yes)  # the purge buttons ask first
    try:
        yield opened
    finally:
        await context.close()


@pytest.fixture
def secured(database_dsn: str) -> Iterator[RunningServer]:
    settings = Settings(database_url=database_dsn, api_tokens=TOKENS, poll_interval=30.0)
    with serving(settings) as running:
        yield running


async def screenshot(page: Page, name: str) -> None:
    """Saves the page for the docs when PGQUEUE_SCREENSHOTS names a directory."""
    if SCREENSHOTS:
        target = Path(SCREENSHOTS) if Path(SCREENSHOTS).is_absolute() else REPO / SCREENSHOTS
        target.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(target / f"{name}.png"), full_page=True)


async def seed(queue: pgqueue.Queue) -> None:
    """orders: 30 messages; billing holds 3 leases of worker-a and 2 dead letters (offsets 1
    and 2); audit has read nothing. payments is empty."""
    await queue.create_topic("orders", description="order events", retention_max_count=100_000)
    await queue.create_topic("payments", retention_max_age=timedelta(days=7))
    await queue.subscribe("orders", "billing", start="earliest", max_attempts=1)
    await queue.subscribe("orders", "audit", start="earliest")
    for number in range(1, 31):
        await queue.publish("orders", {"order": number, "total": number * 10}, key=f"c{number}")
    for message in await queue.claim("orders", "billing", 2, consumer="worker-a"):
        assert await message.nack(error="card declined") == "dead"
    await queue.claim("orders", "billing", 3, lease=600, consumer="worker-a")


def cookies(**values: str) -> dict[str, str]:
    """A Cookie header, as a browser signed in to the dashboard sends it."""
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in values.items())}


async def dead_offsets(queue: pgqueue.Queue) -> list[int]:
    return [letter.offset for letter in await queue.dead_letters("orders", "billing")]


async def position(queue: pgqueue.Queue, subscriber: str) -> int:
    [stats] = await queue.subscriber_stats("orders", subscriber)
    return stats.position


async def test_every_page_shows_the_queue(
    server: RunningServer, queue: pgqueue.Queue, page: Page
) -> None:
    await seed(queue)

    await page.goto(f"{server.url}/ui")
    orders = page.locator('#topics tr[data-topic="orders"]')
    await expect(orders.locator(".last-offset")).to_have_text("30")
    await expect(orders).to_contain_text("100,000 messages")  # retention
    await expect(orders).to_contain_text("KiB")  # the log's size on disk
    await expect(page.locator('#topics tr[data-topic="payments"]')).to_contain_text("7d")

    await orders.get_by_role("link", name="orders").click()
    await expect(page.locator("h1")).to_have_text("Topic orders")
    billing = page.locator('#subscribers tr[data-subscriber="billing"]')
    await expect(billing.locator(".position")).to_have_text("2")  # dead letters are done
    await expect(billing.locator(".dead")).to_have_text("2")
    await expect(billing.locator(".consumers")).to_have_text("1")  # worker-a
    await expect(page.locator('#subscribers tr[data-subscriber="audit"] .lag')).to_have_text("30")
    # The live tail shows the last 20 messages, then what is published while it runs.
    await expect(page.locator("#tail tbody tr")).to_have_count(20)
    await expect(page.locator('#tail tr[data-offset="11"]')).to_contain_text('"order":11')
    await queue.publish("orders", {"order": 31}, key="late")
    await expect(page.locator('#tail tr[data-offset="31"]')).to_contain_text("late")
    await screenshot(page, "topic")
    # Browsing made no subscriber and claimed nothing.
    assert {s.name for s in await queue.list_subscribers("orders")} == {"billing", "audit"}

    await billing.get_by_role("link", name="billing").click()
    await expect(page.locator("h1")).to_have_text("Subscriber billing")
    leases = page.locator("#leases tbody tr")
    await expect(leases).to_have_count(3)
    await expect(leases.first).to_contain_text("worker-a")
    await expect(page.locator('#leases tr[data-offset="3"]')).to_contain_text("live")
    letter = page.locator('#dead-letters tr[data-offset="1"]')
    await expect(letter).to_contain_text("card declined")
    await expect(letter.locator(".payload")).to_have_text('{"order":1,"total":10}')
    await screenshot(page, "subscriber")

    # Seen a second time, a topic has a publish rate (from the two samples of its offsets).
    await page.goto(f"{server.url}/ui")
    await expect(orders.locator(".last-offset")).to_have_text("31")
    await screenshot(page, "topics")


async def test_replay_of_a_dead_letter_delivers_it_again(
    server: RunningServer, queue: pgqueue.Queue, page: Page
) -> None:
    await seed(queue)
    assert await dead_offsets(queue) == [1, 2]

    await page.goto(f"{server.url}/ui/topics/orders/subscribers/billing")
    await page.locator('#dead-letters tr[data-offset="2"] button.replay').click()

    await expect(page.locator(".notice")).to_contain_text("Replayed 1 dead letters")
    await expect(page.locator("#dead-letters tbody tr")).to_have_count(1)
    assert await dead_offsets(queue) == [1]
    [again] = await queue.claim("orders", "billing", 1, consumer="checker")
    assert (again.offset, again.payload) == (2, {"order": 2, "total": 20})

    await page.locator('#dead-letters tr[data-offset="1"] button.purge').click()
    await expect(page.locator(".notice")).to_contain_text("Purged 1 dead letters")
    assert await dead_offsets(queue) == []


async def test_reset_is_previewed_then_applied(
    server: RunningServer, queue: pgqueue.Queue, page: Page
) -> None:
    await seed(queue)
    await queue.reset("orders", to="latest", subscriber="audit")
    assert await position(queue, "audit") == 30

    await page.goto(f"{server.url}/ui/topics/orders/subscribers/audit")
    await page.locator("#reset-to").fill("-10")
    await page.locator("#reset-preview").click()
    await expect(page.locator("#new-position")).to_have_text("20")
    await expect(page.locator("#preview")).to_contain_text("10 messages will be delivered again")
    await screenshot(page, "reset-preview")
    assert await position(queue, "audit") == 30  # a preview changes nothing

    await page.locator("#reset-apply").click()
    await expect(page.locator(".notice")).to_contain_text("the position is now 20")
    assert await position(queue, "audit") == 20


async def test_reset_changed_since_the_preview_is_not_applied(
    server: RunningServer, queue: pgqueue.Queue, page: Page
) -> None:
    await seed(queue)
    await page.goto(f"{server.url}/ui/topics/orders/subscribers/audit")
    await page.locator("#reset-to").fill("latest")
    await page.locator("#reset-preview").click()
    await expect(page.locator("#new-position")).to_have_text("30")

    await queue.reset("orders", to=5, subscriber="audit")  # someone else, meanwhile
    await page.locator("#reset-apply").click()

    await expect(page.locator(".notice")).to_contain_text("Not applied")
    assert await position(queue, "audit") == 4


async def test_an_admin_token_is_required_when_tokens_are_on(
    secured: RunningServer, queue: pgqueue.Queue, page: Page
) -> None:
    await seed(queue)

    await page.goto(f"{secured.url}/ui/topics/orders")
    assert page.url == f"{secured.url}/ui/login?next=/ui/topics/orders"
    await page.locator("#token").fill("pub-token")
    await page.locator("#sign-in").click()
    await expect(page.locator(".notice")).to_contain_text("not an admin token")
    await page.goto(f"{secured.url}/ui/topics/orders")
    assert "/ui/login" in page.url

    await page.locator("#token").fill("admin-token")
    await page.locator("#sign-in").click()
    await expect(page.locator("h1")).to_have_text("Topic orders")
    jar = {c["name"]: c for c in await page.context.cookies()}
    token_cookie = jar["pgqueue_ui_token"]
    assert (token_cookie["httpOnly"], token_cookie["sameSite"]) == (True, "Strict")

    await page.get_by_role("button", name="Sign out").click()
    await page.goto(f"{secured.url}/ui/topics/orders")
    assert "/ui/login" in page.url


async def test_without_a_browser_session_nothing_is_shown_or_changed(
    secured: RunningServer, queue: pgqueue.Queue
) -> None:
    await seed(queue)
    dead_page = "/ui/topics/orders/subscribers/billing"
    replay = f"{dead_page}/dead-letters/replay"
    async with httpx.AsyncClient(base_url=secured.url) as http:
        anonymous = await http.get("/ui")
        assert (anonymous.status_code, anonymous.headers["location"]) == (
            303,
            "/ui/login?next=/ui",
        )
        assert (await http.get("/ui/topics/orders/tail")).status_code == 401
        publisher = await http.get("/ui", headers=cookies(pgqueue_ui_token="pub-token"))
        assert publisher.status_code == 403
        assert "orders" not in publisher.text
        refused = await http.post(replay, headers=cookies(pgqueue_ui_token="pub-token"))
        assert refused.status_code in (401, 403)

        # An admin's cookie without the form's CSRF token (a forged cross-site form).
        admin = cookies(pgqueue_ui_token="admin-token", pgqueue_ui_csrf="x" * 43)
        forged = await http.post(replay, headers=admin, data={"csrf": "y" * 43})
        assert forged.status_code == 403
        assert (await http.get(replay, headers=admin)).status_code == 405  # never on GET
        assert await dead_offsets(queue) == [1, 2]

        done = await http.post(replay, headers=admin, data={"csrf": "x" * 43, "offset": "1"})
        assert (done.status_code, done.headers["location"]) == (
            303,
            f"{dead_page}?done=replayed&count=1",
        )
    assert await dead_offsets(queue) == [2]


async def test_pages_load_nothing_from_elsewhere(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        topics = await http.get("/ui")
        assert topics.status_code == 200
        assert "frame-ancestors 'none'" in topics.headers["content-security-policy"]
        assert "//" not in topics.text.replace(server.url, "")  # no absolute URL to another host
        for asset in ("/ui/static/ui.css", "/ui/static/ui.js"):
            assert (await http.get(asset)).status_code == 200
        assert (await http.get("/ui/static/..%2Fpages.py")).status_code == 404


def test_publish_rate_comes_from_successive_samples() -> None:
    from pgqueue.web.ui.views import PublishRates  # here: the other tests run without it

    now = [100.0]
    rates = PublishRates(clock=lambda: now[0])
    assert rates.observe("t", 10) is None  # one sample is no rate
    now[0] = 104.0
    assert rates.observe("t", 30) == 5.0
    now[0] = 150.0
    assert rates.observe("t", 50) == 40 / 50
    now[0] = 200.0  # the samples of 100 and 104 left the minute window
    assert rates.observe("t", 90) == 40 / 50
    now[0] = 201.0
    assert rates.observe("t", 3) is None  # fewer than before: a new topic of that name
