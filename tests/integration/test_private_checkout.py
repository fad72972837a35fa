"""A clone in a private folder (root's home, `mktemp -d`) runs the suite's set-up as root.

PostgreSQL refuses to run as root, so the devstack runs it as the postgres user, who cannot
enter a mode-0700 folder: its files then go to a per-checkout folder it owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INNER_PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist")


@pytest.mark.skipif(os.geteuid() != 0, reason="the private-folder problem only exists as root")
def test_the_suite_sets_up_from_a_checkout_in_a_private_folder() -> None:
    with tempfile.TemporaryDirectory() as private:  # mode 0700, like root's home
        assert os.stat(private).st_mode & 0o777 == 0o700
        clone = Path(private) / "rebound"
        _copy_tracked_files(clone)
        broker = clone / ".local" / "bin" / "tansu"
        broker.parent.mkdir(parents=True)
        shutil.copy2(ROOT / ".local" / "bin" / "tansu", broker)
        result = subprocess.run(
            [*INNER_PYTEST, "tests/integration/test_infra.py"],
            cwd=clone,
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
            capture_output=True,
            text=True,
            timeout=100,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "3 passed" in result.stdout


def _copy_tracked_files(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
