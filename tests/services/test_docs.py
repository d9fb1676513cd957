"""The README's REST and WebSocket examples run as written; the protocol doc is current."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import httpx

from service_subscribe.frames import protocol_schema
from tests.services.conftest import RunningServer
from tests.support import eventually, within

ROOT = Path(__file__).resolve().parent.parent.parent


def _example(kind: str, server: RunningServer) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- tested: {kind} -->\n```\w+\n(.*?)```", text, re.DOTALL)
    assert match, kind
    # The README talks to the default address; the test server has its own port.
    return match.group(1).replace("127.0.0.1:8888", server.url.removeprefix("http://"))


async def _run(*argv: str, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await within(proc.communicate(stdin.encode() if stdin else None), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_readme_curl_and_websocket_examples(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    out = await _run("bash", "-euo", "pipefail", stdin=_example("curl", server))
    assert '"offset":1' in out and '"offsets":[2,3]' in out
    assert '"applied":false' in out
    out = await _run(sys.executable, "-c", _example("websocket", server))
    assert out.splitlines() == ["welcome", "1 {'id': 1}"]

    async def acked() -> bool:
        # The example closes right after its ack; the server carries the ack out after that.
        stats = (await http.get("/stats")).json()["subscribers"]
        return any(s["subscriber"] == "audit" and s["position"] == 1 for s in stats)

    await eventually(acked)


def test_the_protocol_doc_matches_the_frame_models() -> None:
    doc = (ROOT / "docs" / "websocket.md").read_text()
    block = re.search(r"```json\n(.*?)```", doc, re.DOTALL)
    assert block and json.loads(block.group(1)) == json.loads(json.dumps(protocol_schema()))
