"""`python -m tests.bench.profiled OUT MODULE ARGS...`: run a service module under cProfile.

uvicorn re-raises SIGTERM after a clean stop, which would end the process before cProfile
writes its file: the statistics are written by the SIGTERM handler this installs first
(uvicorn restores it before re-raising).
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
from types import FrameType


def main() -> None:
    out, module, *args = sys.argv[1:]
    profile = cProfile.Profile()

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
