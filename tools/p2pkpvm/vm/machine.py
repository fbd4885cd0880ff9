"""One guest: vng under pexpect, console commands, background jobs, dmesg, death."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import threading
import time
from pathlib import Path

import pexpect

from p2pkpvm.errors import CommandFailed, CommandTimeout, GuestDied, HarnessError
from p2pkpvm.kernel.choice import KernelChoice
from p2pkpvm.paths import project_root
from p2pkpvm.vm import crash
from p2pkpvm.vm.console import CommandResult, Console, clean
from p2pkpvm.vm.vng import VngSpec, build_argv, stderr_to_file, without_udev

log = logging.getLogger(__name__)
KMSG_TAIL = 4000


def vng_path() -> str:
    venv = project_root() / ".venv" / "bin" / "vng"
    if venv.exists():
        return str(venv)
    found = shutil.which("vng")
    if found is None:
        raise HarnessError("vng (virtme-ng) not found: run `make deps` to create .venv")
    return found


def guest_env(vng: str) -> dict[str, str]:
    """vng calls virtme-run by name: put its directory first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(vng).parent) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    return env


class GuestOps:
    """What a guest offers on top of `_run` (one console command with a raw deadline): polling,
    background jobs, dmesg marks.  Shared by VM and the attached cluster's RemoteVM."""

    name: str
    ipv4: str
    ipv6: str | None
    time_scale: float
    kernel: KernelChoice | None

    def __init__(self) -> None:
        self._mark = ""
        self._jobs = 0
        self._job_prefix = f"/tmp/p2pkp-job-{secrets.token_hex(3)}"

    def _run(self, cmd: str, timeout: float, check: bool) -> CommandResult:
        raise NotImplementedError

    def run(self, cmd: str, timeout: float = 30.0, check: bool = True) -> CommandResult:
        """Run cmd on the console; the deadline is timeout x time_scale."""
        return self._run(cmd, timeout * self.time_scale, check)

    @property
    def module(self) -> Path:
        """The p2pkp.ko built for this guest's kernel."""
        if self.kernel is None:
            raise HarnessError(f"{self.name}: booted without a kernel choice, no module")
        return self.kernel.module

    def wait_for(self, cmd: str, timeout: float, interval: float = 0.5) -> CommandResult:
        """Poll cmd until it exits 0; CommandTimeout (with the last output) at the deadline
        (timeout x time_scale)."""
        timeout *= self.time_scale
        deadline = time.monotonic() + timeout
        last = CommandResult(rc=-1, output="")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandTimeout(
                    self.name,
                    cmd,
                    f"condition not met within {timeout:.1f} s; last rc "
                    f"{last.rc}, output:\n{last.output[-1000:]}",
                    "",
                )
            last = self._run(cmd, max(left, 1.0), check=False)
            if last.rc == 0:
                return last
            time.sleep(min(interval, max(deadline - time.monotonic(), 0)))

    def spawn(self, cmd: str) -> BackgroundJob:
        """Start cmd in the background (own session); output goes to a guest file."""
        self._jobs += 1
        job = BackgroundJob(self, f"{self._job_prefix}-{self._jobs}", cmd)
        # pid and exit code files appear atomically (mv), never half-written.  One console
        # round.  The console's bash runs without job control (no controlling tty: $- has no
        # m), so the job starts in the shell's process group, setsid does not fork, and $! is
        # the job's session leader once setsid() has run; with job control, setsid would
        # fork: then the command waits for the pid file (bounded: 400 x 50 ms).  Under TCG
        # every exec costs ~0.2 s: waiting for the file made a spawn take 1.6 s.
        script = (
            f"echo $$ > {job.pidfile}.tmp && mv {job.pidfile}.tmp {job.pidfile}\n"
            f"( {cmd}\n)\necho $? > {job.rcfile}.tmp && mv {job.rcfile}.tmp {job.rcfile}"
        )
        res = self.run(
            f"rm -f {job.pidfile} {job.rcfile}; setsid sh -c {shlex.quote(script)} "
            f"> {job.logfile} 2>&1 < /dev/null &\n"
            "case $- in *m*) n=0; "
            f"while ! grep -qxE '[0-9]+' {job.pidfile} 2>/dev/null && [ $n -lt 400 ]; "
            f'do n=$((n + 1)); sleep 0.05; done; echo "@pid $(cat {job.pidfile})";; '
            # $! is the job once setsid() has run in it (setsid's exec takes a while): wait
            # for that with builtins only, so that a kill of its group right after works
            "*) p=$!; n=0; while [ -e /proc/$p ] && [ $n -lt 200000 ] && "
            '! { read -r _ _ _ _ _ s _ < /proc/$p/stat && [ "$s" = "$p" ]; } 2>/dev/null; '
            'do n=$((n + 1)); done; echo "@pid $p";; esac',
            timeout=30,
        )
        m = re.search(r"^@pid (\d+)$", res.output, re.MULTILINE)
        if m is None:
            raise CommandFailed(
                self.name, cmd, -1, f"background job did not start: {res.output[-500:]}", ""
            )
        job.pid = int(m[1])
        return job

    # ---- dmesg --------------------------------------------------------------------------
    def dmesg(self) -> str:
        return self.run("dmesg", timeout=30).output

    def mark_dmesg(self) -> str:
        """Write a fresh marker into the kernel log; dmesg_since_mark() reads after it."""
        self.run(self.mark_dmesg_script(), timeout=10)
        return self._mark

    def mark_dmesg_script(self) -> str:
        """Shell that writes a fresh marker into the kernel log, to run as part of a longer
        command (one console round); dmesg_since_mark() reads after it."""
        self._mark = f"P2PKP-MARK-{secrets.token_hex(6)}"
        return f"echo {self._mark} > /dev/kmsg"

    def dmesg_since_mark(self, before: str = "") -> str:
        """The kernel log since the mark; `before` (shell) runs first in the same console
        round, whatever its exit status (e.g. a test's cleanup, whose effects on the kernel
        then belong to the log read)."""
        first = f"{{ {before}; }} >/dev/null 2>&1; " if before else ""
        if not self._mark:
            if first:
                self.run(before, check=False)
            return self.dmesg()
        # When the log was cleared (dmesg -C) since the mark, all of it is "since the mark".
        # Two execs (each costs ~0.2 s under TCG), once per test.
        out = self.run(f"{first}dmesg | awk {shlex.quote(since_mark_awk(self._mark))}", timeout=60)
        return out.output

    def module_loaded(self, module: str) -> bool:
        return self.run(f"grep -q '^{module} ' /proc/modules", check=False).rc == 0


class VM(GuestOps):
    """A booted guest. `run()` is serialised by a lock, so threads may share a VM."""

    def __init__(
        self,
        spec: VngSpec,
        logdir: Path,
        netns: str | None = None,
        ipv4: str = "",
        ipv6: str | None = None,
        kernel: KernelChoice | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        # The kernel the guest boots and the module built for it (None: a bare guest, e.g.
        # the KVM probe or a unit test); every deadline is scaled by its time_scale.
        self.kernel = kernel
        self.time_scale = kernel.time_scale if kernel is not None else 1.0
        self.name = spec.name
        self.ipv4 = ipv4  # address without prefix ("" when the guest has no network)
        self.ipv6 = ipv6
        self.logdir = logdir
        self.netns = netns
        self.console_log = logdir / f"{self.name}.console.log"
        self.kmsg_log = logdir / f"{self.name}.kmsg.log"
        self.boot_seconds: float | None = None
        self.dead_reason: str | None = None
        self._lock = threading.RLock()
        self._child: pexpect.spawn | None = None
        self._console: Console | None = None
        self._kmsg_start = 0

    @property
    def tap(self) -> str:
        """The host-side tap of the guest's first NIC ("" without network)."""
        return self.spec.nics[0].tap if self.spec.nics else ""

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, boot_timeout: float = 300.0) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        vng = vng_path()
        argv = build_argv(self.spec, vng=vng)
        if not self.spec.udev:
            argv = without_udev(argv)
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        # QEMU truncates the file its console chardev writes to: every boot of a guest (a
        # replacement) gets a file of its own, so the earlier boot's log stays and this one
        # starts at offset 0.
        self.kmsg_log = fresh_log(self.logdir, self.name, ".kmsg.log")
        argv = stderr_to_file(argv, self.kmsg_log)
        self._kmsg_start = 0
        log.info("%s: starting: %s", self.name, shlex.join(argv))
        t0 = time.monotonic()
        logf = self.console_log.open("a", encoding="utf-8", errors="replace")
        self._child = pexpect.spawn(
            argv[0],
            argv[1:],
            encoding="utf-8",
            codec_errors="replace",
            timeout=boot_timeout,
            dimensions=(50, 4096),
            env=guest_env(vng),
        )
        self._console = Console(self._child, self.name, logf)
        self.dead_reason = None
        try:
            self._console.wait_shell(boot_timeout)
            self._console.run("set +m; export TERM=dumb", timeout=30 * self.time_scale)
        except HarnessError:
            self.kill()
            raise
        self.boot_seconds = time.monotonic() - t0
        log.info("%s: shell ready after %.1f s", self.name, self.boot_seconds)

    @property
    def alive(self) -> bool:
        return self.dead_reason is None and self._child is not None and self._child.isalive()

    def kill(self) -> None:
        """Stop qemu (its whole process group). Idempotent."""
        child = self._child
        if child is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while child.isalive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not child.isalive():
                break
        _wait_group_gone(child.pid, 10.0)
        try:
            child.close(force=True)
        except pexpect.ExceptionPexpect as exc:
            log.warning("%s: close: %s", self.name, exc)
        if child.logfile_read is not None:
            child.logfile_read.flush()
        self._child = None
        if self.dead_reason is None:
            self.dead_reason = "stopped"

    # ---- kernel log (host side: the guest's hvc0 goes to a file) ------------------------
    def kernel_log(self, since_boot: bool = True) -> str:
        try:
            with self.kmsg_log.open("rb") as f:
                if since_boot:
                    f.seek(self._kmsg_start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def full_tail(self) -> str:
        con = self._console.tail() if self._console else ""
        kmsg = clean(self.kernel_log())[-KMSG_TAIL:]
        return (
            f"--- serial console ({self.console_log}) ---\n{con}\n"
            f"--- kernel log ({self.kmsg_log}) ---\n{kmsg}"
        )

    def _died(self, cmd: str, why: str, exc: BaseException | None = None) -> GuestDied:
        if self._child is not None and self._child.isalive():
            # Give qemu a moment to write the last kernel lines, then stop it.
            time.sleep(0.5)
        findings = crash.scan(self.kernel_log())
        self.dead_reason = why
        tail = self.full_tail()
        self.kill()
        self.dead_reason = why
        return GuestDied(self.name, cmd, why, tail, crash.summarize(findings))

    # ---- commands -----------------------------------------------------------------------
    def _run(self, cmd: str, timeout: float, check: bool) -> CommandResult:
        with self._lock:
            if self._console is None or self.dead_reason is not None:
                raise GuestDied(
                    self.name, cmd, f"guest is not running ({self.dead_reason})", self.full_tail()
                )
            try:
                res = self._console.run(cmd, timeout)
            except GuestDied as exc:
                raise self._died(cmd, "guest died (qemu exited)") from exc
            except CommandTimeout as exc:
                try:
                    self._console.interrupt()
                except GuestDied as exc2:
                    raise self._died(
                        cmd,
                        f"command timed out after {timeout:.1f} s and the console did not recover",
                    ) from exc2
                raise CommandTimeout(
                    self.name,
                    cmd,
                    f"no result within {timeout:.1f} s (interrupted; console recovered)",
                    exc.console_tail,
                ) from None
        if check and res.rc != 0:
            raise CommandFailed(self.name, cmd, res.rc, res.output, self._console.tail())
        return res

    def interact(self) -> None:
        """Hand the console to the user (Ctrl-] detaches)."""
        if self._child is None:
            raise GuestDied(self.name, "", "guest is not running", "")
        with self._lock:
            # Not run(): the prompt changes, so there is no marker to wait for.
            self._child.sendline("stty echo; set -m; PS1='\\u@\\h:\\w\\$ '")
            self._child.interact()


def fresh_log(logdir: Path, name: str, suffix: str) -> Path:
    """logdir/NAME.SUFFIX, or NAME-2.SUFFIX, NAME-3.SUFFIX... when taken."""
    path, n = logdir / f"{name}{suffix}", 1
    while path.exists():
        n += 1
        path = logdir / f"{name}-{n}{suffix}"
    return path


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """qemu is a child of vng: wait until every process of the group has exited."""
    for sig in (None, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + timeout
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _group_alive(pgid):
            return
    log.warning("process group %d survives SIGKILL", pgid)


def parse_wait(vm: str, cmd: str, output: str) -> CommandResult:
    """The exit code and output of a finished job from its wait poll ("@rc N" then the
    job's output)."""
    m = re.search(r"^@rc (-?\d+)\n", output, re.MULTILINE)
    if m is None:
        raise CommandFailed(vm, cmd, -1, f"no exit code in {output[-500:]!r}", "")
    return CommandResult(rc=int(m[1]), output=output[m.end() :])


class BackgroundJob:
    """A guest command started with GuestOps.spawn()."""

    def __init__(self, vm: GuestOps, base: str, cmd: str) -> None:
        self.vm = vm
        self.cmd = cmd
        self.pid = 0
        self.pidfile, self.rcfile, self.logfile = f"{base}.pid", f"{base}.rc", f"{base}.log"

    def wait(self, timeout: float) -> CommandResult:
        """Wait for the job to finish; returns its exit code and output (one console round
        per poll: the exit code and the output come with the poll that finds them)."""
        try:
            res = self.vm.wait_for(
                f'test -e {self.rcfile} && {{ echo "@rc $(cat {self.rcfile})"; '
                f"cat {self.logfile}; }}",
                timeout=timeout,
                interval=0.2,
            )
        except CommandTimeout as exc:
            raise CommandTimeout(
                self.vm.name,
                self.cmd,
                f"background job (pid {self.pid}) still running after "
                f"{timeout:.1f} s; output so far:\n{self.output()[-1500:]}",
                exc.console_tail,
            ) from None
        return parse_wait(self.vm.name, self.cmd, res.output)

    def output(self) -> str:
        return self.vm.run(f"cat {self.logfile}", check=False).output

    def kill(self, sig: str = "TERM") -> None:
        self.vm.run(f"kill -{sig} -- -{self.pid} 2>/dev/null; true", timeout=10)


def since_mark_awk(mark: str) -> str:
    """awk program: the lines after the last one containing `mark`, or every line when none
    does (the log was cleared since)."""
    return (
        f'{{ line[NR] = $0 }} index($0, "{mark}") {{ from = NR }} '
        "END { for (i = from + 1; i <= NR; i++) print line[i] }"
    )
