"""Orchestration: private PostgreSQL, server, worker, consumers, publishers and the nemesis;
then the drain, the evidence and the checker. Every process started here is stopped here, on
success, failure or interruption alike; sweep() is the last resort for a clean-up cut short."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

import pgqueue
from bench.chaos import checker, evidence
from bench.chaos.checker import Evidence
from bench.chaos.consumers import ConsumerStats, DeliveryLog, DeliveryReader, start_consumers
from bench.chaos.faults import Nemesis
from bench.chaos.model import (
    MAX_ATTEMPTS,
    SUBSCRIBERS,
    Delivery,
    client_settings,
    topic_names,
    with_application_name,
)
from bench.chaos.postgres import PrivatePostgres
from bench.chaos.publishers import (
    Ledger,
    Pace,
    TransactionPublisher,
    library_publisher,
    rest_publisher,
)
from bench.chaos.server import ServerProcess, log_findings
from bench.chaos.worker import DELIVERIES, WorkerProcess
from pgqueue import migrate

QUIET_END = 2.0  # no fault starts in the last seconds of publishing
RETRY_GRACE = 10.0  # a publish still failing this long after publishing ends is unconfirmed
SHARES = {"rest": 0.4, "lib": 0.35, "tx": 0.25}  # of the publish rate
MEAN_BATCH = 1.8  # see publishers._batch
MAIN_DELIVERIES = "deliveries-main.jsonl"


@dataclass(frozen=True)
class Options:
    seconds: float
    seed: int
    topics: int
    rate: float  # messages per second, all publishers together
    drain_seconds: float


@dataclass
class Run:
    """Everything the run started (so that the clean-up finds it) and what it learnt."""

    options: Options
    run_dir: Path
    postgres: PrivatePostgres
    dsn: str = ""
    topics: list[str] = field(default_factory=list)
    server: ServerProcess | None = None
    worker: WorkerProcess | None = None
    queues: list[pgqueue.Queue] = field(default_factory=list)
    consumers: list[asyncio.Task[None]] = field(default_factory=list)
    consumer_stats: list[ConsumerStats] = field(default_factory=list)
    publishers: list[asyncio.Task[None]] = field(default_factory=list)
    main_log: DeliveryLog | None = None
    timings: dict[str, float] = field(default_factory=dict)


async def chaos(options: Options, run_dir: Path) -> dict[str, Any]:
    """One run; returns the report (checker findings, faults, timings)."""
    run = Run(options, run_dir, PrivatePostgres(run_dir / "pgdata"))
    began = time.time()
    try:
        postgres_settings = await _set_up(run)
        run.timings["setup"] = time.time() - began
        ledger, nemesis, started_at = await _unleash(run)
        found, extra = await _gather(run, ledger, nemesis, started_at)
    finally:
        await _clean_up(run)
    report = checker.check(found)
    report |= extra | {
        "seed": options.seed,
        "seconds": options.seconds,
        "postgres": postgres_settings,
        "timings_s": {
            k: round(v, 1) for k, v in (run.timings | {"total": time.time() - began}).items()
        },
    }
    return report


async def _set_up(run: Run) -> dict[str, str]:
    """PostgreSQL, schema, topics and subscribers, the server, the worker and the main
    process's consumers; returns the server settings that matter for durability."""
    run.dsn = await asyncio.to_thread(run.postgres.start)
    postgres_settings = await run.postgres.configure()
    await asyncio.to_thread(migrate.upgrade, run.dsn)
    run.topics = topic_names(run.options.topics)
    await _create(run.dsn, run.topics)
    run.server = ServerProcess(run.dsn, _free_port(), run.run_dir / "server.log", run.run_dir)
    run.server.start()
    # Both start at once (each is seconds of imports); the worker's WebSocket consumers
    # retry until the server answers.
    run.worker = WorkerProcess(run.server.url, run.dsn, run.topics, run.run_dir)
    await asyncio.gather(run.server.wait_ready(), run.worker.ready())
    queue = await pgqueue.connect(settings=client_settings(run.dsn, "chaos-consumers"))
    run.queues.append(queue)
    run.main_log = DeliveryLog(run.run_dir / MAIN_DELIVERIES)
    run.consumers, run.consumer_stats = start_consumers(
        "main", run.topics, queue, run.server.ws_url, run.main_log
    )
    return postgres_settings


async def _create(dsn: str, topics: list[str]) -> None:
    """Every subscriber exists, at earliest, before the first publish: it owes everything."""
    async with pgqueue.connect(settings=client_settings(dsn, "chaos-admin")) as q:
        for topic in topics:
            await q.create_topic(topic, description="chaos run")
            for spec in SUBSCRIBERS:
                await q.subscribe(
                    topic,
                    spec.name,
                    start="earliest",
                    filter=spec.filter,
                    max_attempts=MAX_ATTEMPTS,
                )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _unleash(run: Run) -> tuple[Ledger, Nemesis, float]:
    """Publishing for --seconds while the nemesis strikes; returns when both are done and
    everything is up again."""
    assert run.server is not None and run.worker is not None
    loop = asyncio.get_running_loop()
    started, started_at = loop.time(), time.time()
    until = started + run.options.seconds
    rng = random.Random(run.options.seed)
    ledger = Ledger()
    run.publishers = await _start_publishers(run, rng, ledger, until)
    nemesis = Nemesis(
        random.Random(rng.random()),
        run.postgres,
        run.server,
        run.worker.process,
        with_application_name(run.dsn, "chaos-nemesis"),
        run.topics,
        started_at,
    )
    await nemesis.run(until - QUIET_END)
    await asyncio.gather(*run.publishers)
    run.timings["chaos"] = loop.time() - started
    return ledger, nemesis, started_at


async def _start_publishers(
    run: Run, rng: random.Random, ledger: Ledger, until: float
) -> list[asyncio.Task[None]]:
    assert run.server is not None
    rate = run.options.rate

    def pace(way: str) -> Pace:
        return Pace(until, until + RETRY_GRACE, MEAN_BATCH / (rate * SHARES[way]))

    def own() -> random.Random:
        return random.Random(rng.random())

    queue = await pgqueue.connect(settings=client_settings(run.dsn, "chaos-publisher"))
    run.queues.append(queue)
    tx = TransactionPublisher(with_application_name(run.dsn, "chaos-tx"))
    url, topics = run.server.url, run.topics
    return [
        asyncio.create_task(rest_publisher(url, topics, own(), pace("rest"), ledger, "rest")),
        asyncio.create_task(library_publisher(queue, topics, own(), pace("lib"), ledger, "lib")),
        asyncio.create_task(tx.run(topics, own(), pace("tx"), ledger, "tx")),
    ]


async def _gather(
    run: Run, ledger: Ledger, nemesis: Nemesis, started_at: float
) -> tuple[Evidence, dict[str, Any]]:
    """The drain, then everything the checker reads; plus the report's other parts."""
    assert run.server is not None and run.worker is not None and run.main_log is not None
    async with pgqueue.connect(settings=client_settings(run.dsn, "chaos-checker")) as q:
        tx_offsets = await evidence.resolve(q, ledger)
        log = await evidence.read_log(q, run.topics)
        readers = [
            DeliveryReader(run.run_dir / MAIN_DELIVERIES),
            DeliveryReader(run.run_dir / DELIVERIES),
        ]
        deliveries: list[Delivery] = []
        drained = await evidence.drain(q, log, readers, deliveries, run.options.drain_seconds)
        run.timings["drain"] = drained["seconds"]
        ended_at = time.time()
        await _stop_consumers(run)
        worker_exit = run.worker.stop()
        for reader in readers:
            deliveries += reader.new()
        dead = await evidence.dead_letters(q, run.topics)
        stats = await evidence.subscriber_stats(q, run.topics)
        leftovers = await evidence.ephemeral(q, run.topics)
    consumer_stats = [s.as_dict() for s in run.consumer_stats] + run.worker.stats()
    faults = [asdict(f) for f in nemesis.faults]
    found = Evidence(
        ledger,
        log,
        tx_offsets,
        deliveries,
        dead,
        subscriber_stats=stats,
        consumer_stats=consumer_stats,
        started_at=started_at,
        ended_at=ended_at,
        faults=faults,
    )
    extra = {
        "faults": nemesis.counts(),
        "faults_skipped": dict(nemesis.skipped),
        "fault_log": faults,
        "consumers": {c["name"]: c for c in consumer_stats},
        "drained": drained,
        "ephemeral_left": leftovers,
        "worker_exit": worker_exit,
        "server_starts": run.server.starts,
        "server_log": log_findings(run.server.log_path),
    }
    return found, extra


async def _stop_consumers(run: Run) -> None:
    for task in run.consumers:
        task.cancel()
    await asyncio.gather(*run.consumers, return_exceptions=True)
    if run.main_log is not None:
        run.main_log.close()


async def _clean_up(run: Run) -> None:
    for task in run.publishers:
        task.cancel()
    await asyncio.gather(*run.publishers, return_exceptions=True)
    await _stop_consumers(run)
    for queue in run.queues:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(queue.close(), 5)
    if run.worker is not None:
        run.worker.stop()
    if run.server is not None:
        run.server.stop()
    await asyncio.to_thread(run.postgres.stop)


def sweep(run_dir: Path) -> list[int]:
    """Kills whatever a run in run_dir left behind (its server and worker carry
    PGQUEUE_CHAOS_RUN; its postgres names the data directory); returns their pids."""
    me = os.getpid()
    found = []
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        name = process.info["name"] or ""
        if process.info["pid"] == me or not name.startswith(("python", "postgres")):
            continue
        try:
            if name == "postgres":
                mine = str(run_dir) in " ".join(process.info["cmdline"] or ())
            else:
                mine = process.environ().get("PGQUEUE_CHAOS_RUN") == str(run_dir)
        except psutil.Error:
            continue
        if mine:
            found.append(process)
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGCONT)
            process.kill()
    psutil.wait_procs(found, timeout=10)
    return [p.pid for p in found]
