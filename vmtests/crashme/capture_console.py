"""Capture a real guest console (with its noise) while crashme provokes reports, then a panic.

Test-data tool for tools/tests/data/crash/ (see the README there); not part of the suite.
Usage: .venv/bin/python vmtests/crashme/capture_console.py OUT.log [oops|noisy-panic|panic-on-oops]
(build crashme.ko first). "oops": WARN, NULL dereference, then a panic (after an oops, so
without a stack dump). "noisy-panic": WARN while user space floods the console with partial
lines, then a panic with its stack dump; the console log level is left at vng's default.
"panic-on-oops": kernel.panic_on_oops=1, then a NULL dereference: oops, then "Fatal exception".
"""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect

KERNEL = "/boot/vmlinuz-6.1.0-56-amd64"
KO = Path(__file__).resolve().parent / "crashme.ko"
PROMPT = "CRASHCAP# "


def main(out: Path, scenario: str) -> int:
    with out.open("wb") as log:
        child = pexpect.spawn(
            "vng", ["-r", KERNEL, "--disable-kvm", "-m", "512M"], timeout=30, logfile=log
        )
        try:
            child.expect([r"# ", r"\$ "], timeout=240)
            # Split in the command so that its echo does not match the prompt.
            child.sendline(f"PS1='{PROMPT[:5]}''{PROMPT[5:]}'")
            child.expect_exact(PROMPT, timeout=30)

            def run(cmd: str, timeout: int = 60) -> None:
                child.sendline(cmd)
                child.expect_exact(PROMPT, timeout=timeout)

            if scenario == "oops":
                run("dmesg -n 8")
                run(f"insmod {KO}")
                run("echo warn > /proc/crashme")
                # User-space noise racing with an oops on the same console.
                run(
                    "(for i in $(seq 40); do echo noise-$i; done &); "
                    "sh -c 'echo null > /proc/crashme'"
                )
                run("echo 'WARNING: this line is user space, not the kernel'")
            elif scenario == "panic-on-oops":
                run(f"insmod {KO}")
                run("sysctl -w kernel.panic_on_oops=1")
                child.sendline("echo null > /proc/crashme")
                child.expect([r"end Kernel panic", pexpect.EOF], timeout=120)
                child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=20)
                return 0
            else:
                run(f"insmod {KO}")
                run("dmesg -n 8")
                run(
                    "(for i in $(seq 3000); do printf 'noise-%d ' $i; done &); "
                    "sleep 0.2; echo warn > /proc/crashme; wait; echo"
                )
                run("echo 'BUG: user space says so'; echo 'Oops: user space again'")
            child.sendline("echo c > /proc/sysrq-trigger")
            child.expect([r"end Kernel panic", pexpect.EOF], timeout=120)
            child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=20)
        finally:
            child.close(force=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) == 3 else "oops"))
