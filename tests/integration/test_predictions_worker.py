"""The predictions worker process leaves with the scheduler that started it, however that one
ended: a killed scheduler must not leave a worker behind on the host."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

from tests.conftest import eventually

# A scheduler stand-in: starts the refresher's worker, prints its pid, dies without cleanup.
SCRIPT = textwrap.dedent(
    """
    import asyncio, os
    from services.scheduler.predictions.service import PredictionRefresher
    from shared.clock import SystemClock

    async def main():
        refresher = PredictionRefresher("postgresql://unused", SystemClock(), 60.0)
        print(await refresher._in_worker(os.getpid), flush=True)
        os._exit(0)  # as kill -9 would: no shutdown, no atexit

    if __name__ == "__main__":
        asyncio.run(main())
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_the_worker_exits_when_its_scheduler_dies_without_closing_it(tmp_path: Path) -> None:
    script, out = tmp_path / "scheduler_stand_in.py", tmp_path / "worker.pid"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    with out.open("w") as stdout:  # a file, not a pipe: the worker inherits it
        stand_in = await asyncio.create_subprocess_exec(
            sys.executable, str(script), stdout=stdout, env=env
        )
        assert await asyncio.wait_for(stand_in.wait(), 120) == 0
    worker = int(out.read_text().strip().splitlines()[-1])
    assert worker != os.getpid()

    async def gone() -> bool:
        return not _alive(worker)

    await eventually(gone, timeout_s=15, what="the orphaned worker to exit")
