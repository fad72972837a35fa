"""Entry point of `make bench` (python -m tests.bench [options])."""

from __future__ import annotations

from tests.bench.run import main

if __name__ == "__main__":
    main()
