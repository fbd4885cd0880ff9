"""`make help` lists every target of the Makefile (and of kernel/kernel.mk, which it includes)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from p2pkpvm.paths import project_root
from p2pkpvm.plugin import junit


def targets() -> set[str]:
    root = project_root()
    text = (root / "Makefile").read_text() + (root / "kernel" / "kernel.mk").read_text()
    rules = re.findall(r"^([a-z][a-z0-9 -]*):(?!=)", text, re.MULTILINE)
    return {t for rule in rules for t in rule.split()}


def test_help_lists_every_target() -> None:
    found = targets()
    assert {"all", "vm-test", "vm-up", "kernel", "debug-module"} <= found
    out = subprocess.run(
        ["make", "-s", "help"], cwd=project_root(), capture_output=True, text=True, timeout=60
    ).stdout
    listed = set(re.findall(r"make ([a-z][a-z0-9-]*)", out)) | {"all", "help"}
    for line in out.splitlines():  # "make checkpatch | w1 | lint | unit"
        if "|" in line and line.strip().startswith("make "):
            listed |= {w.strip().split()[0] for w in line.strip()[5:].split("|")}
    missing = sorted(found - listed)
    assert not missing, f"make help does not list: {missing}\n{out}"


def _clean_env() -> dict[str, str]:
    """The environment of a user's `make` (not the PIN or flags of a make running these
    tests)."""
    env = dict(os.environ)
    for name in ("KDIR", "KERNEL", "PIN", "P2PKP_PIN", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    return env


def _make_n(*args: str) -> subprocess.CompletedProcess[str]:
    """`make -s -n -k ARGS`.  Only for targets whose recipes have no literal $(MAKE) that would
    run a suite: make runs such lines even with -n (kbuild's dry run among them, which may
    fail on a tree never built: -k goes on with the other targets)."""
    return subprocess.run(
        ["make", "-s", "-n", "-k", *args],
        cwd=project_root(),
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_pin_chooses_headers_and_build_dir() -> None:
    """The default pin builds p2pkp.ko in the work tree, another pin in out/stock-<pin>-module
    against its own headers (the rule p2pkpvm.kernel.choice.module_dir follows)."""
    root = project_root()
    default = _make_n("deps", "module")
    assert "--pin 6.1 deps install\n" in default.stdout
    assert f"-C /lib/modules/6.1.0-56-amd64/build M={root} modules" in default.stdout
    other = _make_n("module", "deps", "PIN=6.12")
    assert "--pin 6.12 deps install\n" in other.stdout
    assert (
        f"-C /lib/modules/6.12.117+deb12-amd64/build M={root}/out/stock-6.12-module modules"
        in other.stdout
    )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("vm-shell", "--pin 6.12 shell --vms 4"),
        ("bench", "--pin 6.12 bench -- --kernel stock"),
        ("kernel", "--pin 6.12 kernel build"),
        ("checkpatch", "--pin 6.12 deps checkpatch"),
    ],
)
def test_targets_pass_the_pin_on(target: str, expected: str, tmp_path: Path) -> None:
    """With a stand-in kernel tree (KDIR=), so that the build they start is a dry run too."""
    (tmp_path / "Makefile").write_text("modules:\n\t@echo kbuild $(M)\n")
    proc = _make_n(target, "PIN=6.12", f"KDIR={tmp_path}")
    assert expected in proc.stdout, proc.stdout + proc.stderr


def test_unknown_pin_stops_make() -> None:
    proc = _make_n("module", "PIN=5.10")
    assert proc.returncode != 0
    assert "PIN=5.10 is not a kernel pin of configs/kernel-pin.yaml (pins: 6.1 6.12)" in proc.stderr


def test_matrix_dry_run_prints_the_loop_only() -> None:
    """`make -n vm-test-matrix` runs nothing (no literal $(MAKE) in its recipe)."""
    proc = _make_n("vm-test-matrix")
    assert proc.returncode == 0, proc.stderr
    assert "for p in 6.1 6.12; do" in proc.stdout
    assert "make --no-print-directory vm-test PIN=$p" in proc.stdout


def test_matrix_runs_every_pin_and_sums_up(tmp_path: Path) -> None:
    """The loop with a stand-in for `make vm-test`: each pin in order, its junit file, one
    summary line per pin, and a failure of one pin fails the whole after the others ran."""
    fake = tmp_path / "fake-vm-test"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "RUN $*" >> "$LOG"\n'
        'case "$*" in *PIN=6.12*) pin=6.12 ;; *) pin=6.1 ;; esac\n'
        'xml=$(echo "$*" | sed -n "s/.*--junitxml=\\([^ ]*\\).*/\\1/p")\n'
        'fails=0; [ "$pin" = 6.12 ] && fails=1\n'
        'echo "<testsuites><testsuite tests=\\"3\\" failures=\\"$fails\\" errors=\\"0\\" '
        'skipped=\\"1\\" time=\\"12.5\\"/></testsuites>" > "$xml"\n'
        'exit "$fails"\n'
    )
    fake.chmod(0o755)
    env = dict(_clean_env(), LOG=str(tmp_path / "log"))
    proc = subprocess.run(
        [
            "make",
            "-s",
            "vm-test-matrix",
            f"VM_TEST_MATRIX_RUN={fake}",
            f"MATRIX_OUT={tmp_path}",
            "PYTEST_ARGS=-k 'a or b'",
        ],
        cwd=project_root(),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    runs = (tmp_path / "log").read_text().splitlines()
    assert runs == [
        f"RUN PIN={p} PYTEST_ARGS=-k 'a or b' --junitxml={tmp_path}/vm-test-{p}.xml"
        for p in ("6.1", "6.12")
    ]
    lines = proc.stdout.splitlines()
    head = lines.index("vm-test-matrix, one line per pin:")
    summary = lines[head + 1 :]
    assert len(summary) == 2, proc.stdout
    assert re.match(
        r"  PIN=6\.1: passed in \d+ s: 3 tests, 0 failures, 0 errors, 1 skipped in 12 s", summary[0]
    )
    assert re.match(r"  PIN=6\.12: FAILED in \d+ s: 3 tests, 1 failures", summary[1])


def test_junit_summary_without_a_file(tmp_path: Path) -> None:
    """A pin whose deps or build failed has no junit file: its line says so."""
    missing = tmp_path / "vm-test-6.12.xml"
    assert junit.summary(missing) == f"no junit file {missing} (pytest did not finish: see above)"
    (tmp_path / "bad.xml").write_text("<testsuites")
    assert junit.summary(tmp_path / "bad.xml").startswith("unreadable junit file")
    one = '<testsuite tests="2" failures="0" errors="1" skipped="0" time="3.4"/>'
    assert junit.summary_text(one) == "2 tests, 0 failures, 1 errors, 0 skipped in 3 s"
