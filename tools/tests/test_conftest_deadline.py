"""vmtests/conftest.py's per-test deadline (timeout_s) stops a hanging test (no VM)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from p2pkpvm.pin import project_root

HANGING = """
import time
import pytest

@pytest.mark.timeout_s(1)
def test_hangs():
    time.sleep(120)

def test_next_one_still_runs():
    assert True
"""


def test_timeout_s_fails_the_test_and_the_session_goes_on(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(HANGING)
    root = project_root()
    env = dict(os.environ, PYTHONPATH=f"{root / 'tools'}{os.pathsep}{root / 'vmtests'}")
    t0 = time.monotonic()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "conftest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_hang.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    elapsed = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "no result within 1 s" in out, out
    assert "1 failed, 1 passed" in out, out
    assert elapsed < 60, f"the 1 s deadline took {elapsed:.0f} s"
