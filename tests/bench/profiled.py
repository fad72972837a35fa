"""`python -m tests.bench.profiled OUT MODULE ARGS...`: run a service module under cProfile.

uvicorn re-raises SIGTERM after a clean stop, which would end the process before cProfile
writes its file: the statistics are written by the SIGTERM handler this installs first
(uvicorn restores it before re-raising). The profile counts the process's CPU time, not
wall time: on a loaded machine wall time charges whichever function was running when the
process was descheduled.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time
from types import FrameType


def main() -> None:
    out, module, *args = sys.argv[1:]
    profile = cProfile.Profile(time.process_time)

    def dump(signum: int, frame: FrameType | None) -> None:
        profile.disable()
        profile.dump_stats(out)
        sys.exit(0)

    signal.signal(signal.SIGTERM, dump)
    sys.argv = [module, *args]
    profile.enable()
    try:
        runpy.run_module(module, run_name="__main__")
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
