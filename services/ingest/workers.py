"""Running ingest: one process, or several identical ones sharing the HTTP port."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import signal
from collections.abc import Sequence

import uvloop

from services.ingest.app import IngestService
from services.ingest.settings import IngestSettings
from shared.clock import SystemClock
from shared.http import serve
from shared.logging import configure_logging, get_logger
from shared.runtime import quiet_garbage_collector

log = get_logger(__name__)
WORKER_STOP_S = 15.0


def _settings(role: str | None) -> IngestSettings:
    settings = IngestSettings()
    return settings if role is None else settings.model_copy(update={"role": role})


def serve_one(role: str | None, reuse_port: bool) -> None:
    """One process: the HTTP server and, by role, the consumer."""
    settings = _settings(role)
    configure_logging("ingest", settings.log_level, settings.log_json)
    log.info(
        "starting",
        role=settings.role,
        port=settings.http_port,
        shops=[s.shop_id for s in settings.shops],
    )
    service = IngestService(settings, SystemClock())
    quiet_garbage_collector()
    uvloop.run(serve(service, settings.http_host, settings.http_port, reuse_port=reuse_port))


def run_workers(count: int, role: str | None) -> int:
    """`count` identical processes on one port; returns when one exits or on SIGINT/SIGTERM.

    A worker that dies takes the others down (exit status 1): the supervisor (make run,
    Docker, Kubernetes) restarts the whole, rather than this process hiding a crash loop.
    """
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=serve_one, args=(role, True), name=f"ingest-{n}")
        for n in range(count)
    ]
    signal.signal(signal.SIGTERM, _interrupt)
    status = 0
    try:
        for worker in workers:
            worker.start()
        multiprocessing.connection.wait([w.sentinel for w in workers])
        status = 1
        log.error("worker_exited", exit_codes=[w.exitcode for w in workers])
    except KeyboardInterrupt:
        pass
    finally:
        _stop(workers)
    return status


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(workers: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for worker in workers:
        if worker.is_alive():
            worker.terminate()  # SIGTERM: each worker shuts down cleanly
    for worker in workers:
        worker.join(WORKER_STOP_S)
        if worker.is_alive():
            worker.kill()
