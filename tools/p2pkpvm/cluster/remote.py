"""Keep a cluster running (`make vm-up`) and use it from other processes (`pytest --attach`).

The `up` process owns the guests (their consoles, namespace, taps) and serves requests on a
unix socket, one JSON line each way per connection: run a command in a guest, describe the
cluster, replace a dead guest, read a guest's kernel log, shut down.  AttachedCluster is the
client: its RemoteVMs are guests like VM (run, wait_for, spawn, dmesg marks...), so the
pytest plugin and the scenario helpers work on them unchanged.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

from p2pkpvm import errors
from p2pkpvm.cluster.cluster import Cluster
from p2pkpvm.errors import GuestDied, HarnessError
from p2pkpvm.kernel.choice import KernelChoice
from p2pkpvm.net.netns import Netns
from p2pkpvm.net.topology import parse_topology_dict
from p2pkpvm.paths import out_dir
from p2pkpvm.vm.console import CommandResult
from p2pkpvm.vm.machine import VM, GuestOps

log = logging.getLogger(__name__)
MAX_MSG = 64 << 20


def default_socket() -> Path:
    return out_dir() / "cluster.sock"


# ---- server (in the `up` process) ---------------------------------------------------------


def describe(cluster: Cluster, topology_text: dict[str, Any]) -> dict[str, Any]:
    k = cluster.kernel
    return {
        "run_id": cluster.run_id,
        "accel": cluster.accel,
        "logdir": str(cluster.logdir),
        "netns": cluster.netns.name,
        "topology": topology_text,
        "kernel": {
            "name": k.name,
            "image": str(k.image),
            "module": str(k.module),
            "pin": k.pin,
            "time_scale": k.time_scale,
            "append": list(k.append),
            "kmemleak": k.kmemleak,
        },
        "guests": [guest_state(vm) for vm in cluster.vms],
    }


def guest_state(vm: VM) -> dict[str, Any]:
    return {
        "name": vm.name,
        "ipv4": vm.ipv4,
        "ipv6": vm.ipv6,
        "tap": vm.tap,
        "alive": vm.alive,
        "dead_reason": vm.dead_reason,
        "boot_seconds": vm.boot_seconds,
    }


class _Handler(socketserver.StreamRequestHandler):
    server: ClusterServer

    def handle(self) -> None:
        line = self.rfile.readline(MAX_MSG)
        try:
            reply = self.server.answer(json.loads(line))
        except HarnessError as exc:
            reply = {
                "error": type(exc).__name__,
                "message": str(exc),
                "vm": getattr(exc, "vm", ""),
                "command": getattr(exc, "command", ""),
                "console_tail": getattr(exc, "console_tail", ""),
            }
        except (ValueError, KeyError) as exc:
            reply = {"error": "HarnessError", "message": f"bad request: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class ClusterServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, cluster: Cluster, path: Path, topology: dict[str, Any]) -> None:
        self.cluster = cluster
        self.topology = topology
        self.stopped = threading.Event()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        super().__init__(str(path), _Handler)
        self.path = path

    def answer(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        if op == "info":
            return describe(self.cluster, self.topology)
        if op == "shutdown":
            self.stopped.set()
            return {"ok": True}
        vm = self.cluster[str(req["vm"])]
        if op == "run":
            res = vm._run(str(req["cmd"]), float(req["timeout"]), bool(req["check"]))
            return {"rc": res.rc, "output": res.output}
        if op == "replace":
            return guest_state(self.cluster.replace(vm.name))
        if op == "state":
            return guest_state(vm)
        if op == "kernel_log":
            return {"text": vm.kernel_log()}
        raise HarnessError(f"unknown request {op!r}")

    def serve(self) -> None:
        """Serve until a shutdown request (the caller handles signals)."""
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        try:
            self.stopped.wait()
        finally:
            self.shutdown()
            self.server_close()
            self.path.unlink(missing_ok=True)


# ---- client ---------------------------------------------------------------------------------


def request(path: Path, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request to the `up` process; its HarnessError re-raised here with its message."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps(req).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise HarnessError(
            f"no running cluster at {path} ({exc.strerror or exc}): start one with "
            "`make vm-up VMS=n`"
        ) from None
    reply: dict[str, Any] = json.loads(data)
    if "error" in reply:
        cls = getattr(errors, str(reply["error"]), HarnessError)
        if issubclass(cls, errors.VMError) and cls is not errors.CommandFailed:
            raise cls(reply["vm"], reply["command"], reply["message"], reply["console_tail"])
        raise HarnessError(str(reply["message"]))
    return reply


class RemoteVM(VM):
    """A guest of a cluster held by a `vm-up` process (a VM whose console is over there)."""

    def __init__(self, owner: AttachedCluster, state: dict[str, Any]) -> None:
        GuestOps.__init__(self)
        self.owner = owner
        self.kernel: KernelChoice | None = owner.kernel
        self.time_scale = owner.kernel.time_scale
        self.update(state)

    def update(self, state: dict[str, Any]) -> None:
        self.name = str(state["name"])
        self.ipv4 = str(state["ipv4"])
        self.ipv6: str | None = state["ipv6"]
        self._tap = str(state["tap"])
        self.netns = self.owner.netns.name
        self.dead_reason = state["dead_reason"]
        self._alive = bool(state["alive"])
        self.boot_seconds = state["boot_seconds"]

    @property
    def tap(self) -> str:
        return self._tap

    @property
    def alive(self) -> bool:
        return self._alive and self.dead_reason is None

    def kill(self) -> None:
        """Nothing: the `vm-up` process owns the guest."""

    def full_tail(self) -> str:
        return ""

    def _call(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        return request(self.owner.socket, {**req, "vm": self.name}, timeout)

    def _run(self, cmd: str, timeout: float, check: bool) -> CommandResult:
        try:
            # The exit code comes back either way; CommandFailed is raised here (its fields
            # do not travel as an error reply).
            r = self._call(
                {"op": "run", "cmd": cmd, "timeout": timeout, "check": False}, timeout + 120.0
            )
        except GuestDied:
            self.update(self._call({"op": "state"}, 30.0))
            raise
        if check and r["rc"] != 0:
            raise errors.CommandFailed(self.name, cmd, int(r["rc"]), str(r["output"]), "")
        return CommandResult(int(r["rc"]), str(r["output"]))

    def kernel_log(self, since_boot: bool = True) -> str:
        return str(self._call({"op": "kernel_log"}, 60.0)["text"])

    def interact(self) -> None:
        raise HarnessError(f"{self.name}: the console belongs to the `vm-up` process")


class AttachedCluster(Cluster):
    """The client side of a `vm-up` cluster (a Cluster whose guests live in that process)."""

    def __init__(self, path: Path) -> None:
        self.socket = path
        self._closed = True  # close() has nothing to tear down here
        info = request(path, {"op": "info"}, 30.0)
        k = info["kernel"]
        self.kernel = KernelChoice(
            str(k["name"]),
            Path(k["image"]),
            Path(k["module"]),
            pin=str(k.get("pin", "")),
            time_scale=float(k["time_scale"]),
            append=tuple(k["append"]),
            kmemleak=bool(k["kmemleak"]),
        )
        self.accel = str(info["accel"])
        self.run_id = str(info["run_id"])
        self.logdir = Path(info["logdir"])
        self.netns = Netns(name=str(info["netns"]))  # not created here: never destroyed
        self.time_scale = self.kernel.time_scale
        self.topology = parse_topology_dict(info["topology"], f"cluster at {path}")
        self.vms: list[VM] = [RemoteVM(self, g) for g in info["guests"]]

    def replace(self, name: str) -> VM:
        vm = self[name]
        assert isinstance(vm, RemoteVM)
        vm.update(request(self.socket, {"op": "replace", "vm": name}, 1800.0))
        return vm

    def close(self) -> None:
        """Nothing: the `vm-up` process owns the guests."""


def shutdown(path: Path) -> None:
    request(path, {"op": "shutdown"}, 30.0)
