"""The consumer process the nemesis freezes (SIGSTOP beyond its lease, then SIGCONT): the
worker-placed consumers of every subscriber, with a Queue of its own.

    python -m bench.chaos.worker --url http://... --dsn postgresql://... --topics a,b --out DIR

Stops on SIGTERM (its deliveries are on disk as they arrive) or when its parent goes away.
WorkerProcess is the orchestrator's handle on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pgqueue
from bench.chaos.consumers import DeliveryLog, start_consumers
from bench.chaos.model import client_settings

DELIVERIES = "deliveries-worker.jsonl"
STATS = "worker-stats.json"
READY = "worker.ready"  # written once its consumers run
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[2]


class WorkerStartFailed(Exception):
    pass


class WorkerProcess:
    """The orchestrator's side: start it, wait until its consumers run, stop it."""

    def __init__(self, url: str, dsn: str, topics: list[str], out: Path) -> None:
        self.out = out
        command = [sys.executable, "-m", "bench.chaos.worker", "--url", url, "--dsn", dsn]
        command += ["--topics", ",".join(topics), "--out", str(out)]
        with open(out / "worker.log", "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                # Marks every process of this run, for the last-resort sweep (see run.sweep).
                env={**os.environ, "PGQUEUE_CHAOS_RUN": str(out)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not (self.out / READY).exists():
            if self.process.poll() is not None or loop.time() > deadline:
                raise WorkerStartFailed(f"the worker did not start; see {self.out}/worker.log")
            await asyncio.sleep(0.1)

    def stop(self) -> int | None:
        """SIGTERM (it writes its stats); its exit status, or None if it had to be killed."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGCONT)  # a frozen process would not see SIGTERM
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def stats(self) -> list[dict[str, Any]]:
        path = self.out / STATS
        return list(json.loads(path.read_text())) if path.exists() else []


async def serve(url: str, dsn: str, topics: list[str], out: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    parent = os.getppid()
    log = DeliveryLog(out / DELIVERIES)
    queue = await _connect(client_settings(dsn, "chaos-worker"))
    ws_base = url.replace("http", "ws", 1)
    tasks, stats = start_consumers("worker", topics, queue, ws_base, log)
    (out / READY).touch()
    try:
        while not stop.is_set() and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.close()
        (out / STATS).write_text(json.dumps([s.as_dict() for s in stats]))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(queue.close(), 5)


async def _connect(settings: pgqueue.Settings) -> pgqueue.Queue:
    """The Queue, however long the database takes to come back (a fault may be under way)."""
    while True:
        try:
            return await pgqueue.connect(settings=settings)
        except pgqueue.DatabaseUnavailable:
            await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--topics", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    # Its stderr is worker.log; the library's warnings (outages) are worth a timestamp.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.url, args.dsn, args.topics.split(","), args.out))


if __name__ == "__main__":
    main()
