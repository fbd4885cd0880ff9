"""Privilege and path rules (issue 7, part 4): what an unprivileged user (nobody) or a forged
datagram can make the module do with files.  Each rule is its own test.

Guest setup as in test_errors.py: commands run as nobody:nogroup with no supplementary groups
(`AS_NOBODY`); files the tests plant are root-owned unless said otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario.scenario import (
    AS_NOBODY,
    FORGE,
    WIRE,
    Guest,
    Scenario,
    listing,
    next_port,
    op,
    op_result,
    q,
    send,
    sha256,
)

VICTIM_TEXT = "root-owned victim: must stay as it is"

pytestmark = pytest.mark.topology("pair")


@pytest.fixture
def scn(scn: Scenario, cluster: ClusterView) -> Iterator[Scenario]:
    """conftest's scn, and afterwards the files this module puts beside its directory."""
    yield scn
    for vm in cluster.vms:
        vm.run(f"rm -rf {q(scn.dir)}-victim {q(scn.dir)}-marker")


def victim(vm: Guest, scn: Scenario) -> tuple[str, str]:
    """A root-owned 0644 file outside the destination directory; (path, sha256)."""
    path = f"{scn.dir}-victim"
    vm.run(f"printf %s {q(VICTIM_TEXT)} > {path} && chown root:root {path} && chmod 0644 {path}")
    return path, sha256(vm, path)


def test_nobody_cannot_send_unreadable_file(scn: Scenario, cluster: ClusterView) -> None:
    """write() opens the file with the caller's credentials: a root-only file is EACCES for
    nobody, and the receiver never sees a START (it keeps waiting)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    secret = scn.path("secret")
    tx.run(f"echo secret > {secret} && chown root:root {secret} && chmod 0600 {secret}")
    assert tx.run(f"{AS_NOBODY} cat {secret}", check=False).rc != 0, "setup: nobody reads it"
    port = next_port()
    job = scn.receiver(rx, scn.path("out"), port)
    out = op(tx, ["socket", f"connect:{rx.ipv4}:{port}", f"write:{secret}"], prefix=AS_NOBODY + " ")
    assert op_result(out, f"write {secret}") == "-1 EACCES", out
    # the same write as root works: the denial is about the caller
    assert (
        op_result(
            op(tx, ["socket", f"connect:{rx.ipv4}:{port}", f"write:{secret}"]), f"write {secret}"
        )
        != "-1 EACCES"
    )
    assert job.wait(timeout=60.0).rc == 0


def test_nobody_cannot_store_where_it_cannot_write(scn: Scenario, cluster: ClusterView) -> None:
    """read() into a root-owned 0755 directory fails EACCES for nobody before any wait, and
    creates nothing there."""
    rx = cluster["vm2"]
    d = scn.path("rootdir")
    rx.run(f"mkdir {d} && chown root:root {d} && chmod 0755 {d}")
    port = next_port()
    out = op(
        rx,
        ["socket", f"bind:0.0.0.0:{port}", f"read:{d}/file"],
        timeout=30.0,
        prefix=AS_NOBODY + " ",
    )
    assert op_result(out, f"read {d}/file") == "-1 EACCES", out
    assert listing(rx, d) == []


def test_symlink_at_final_name_is_replaced_not_followed(
    scn: Scenario, cluster: ClusterView
) -> None:
    """nobody plants DEST -> a root-owned file in a sticky world-writable directory; root
    receives into DEST: the link is replaced by the received file, the target untouched."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    target, before = victim(rx, scn)
    dest = scn.path("incoming")
    rx.run(f"{AS_NOBODY} ln -s {target} {dest}")
    src, digest = scn.make_file(tx, "src", 100_000)
    port = next_port()
    job = scn.receiver(rx, dest, port)
    send(tx, [(rx, port)], [src], timeout=120.0)
    assert job.wait(timeout=60.0).rc == 0
    assert sha256(rx, target) == before, f"{rx.name}: the symlink was written through"
    assert rx.run(f"test -f {dest} && ! test -L {dest}", check=False).rc == 0, rx.run(
        f"ls -la {scn.dir}"
    ).output
    assert sha256(rx, dest) == digest


def test_symlink_at_temporary_name_is_not_followed(scn: Scenario, cluster: ClusterView) -> None:
    """The temporary name .<base>.p2pkp-<id> is guessable by a sender choosing its id: nobody
    plants it as a symlink to a root-owned file, then a forged sender uses that id.  The
    receiver must not write through it (O_EXCL|O_NOFOLLOW): DONE carries an error, read()
    fails, the target is untouched and the link still points where it did."""
    rx = cluster["vm2"]
    target, before = victim(rx, scn)
    xid = "00000000deadbeef"
    dest = scn.path("incoming")
    tmp = scn.path(f".incoming.p2pkp-{xid}")
    rx.run(f"{AS_NOBODY} ln -s {target} {tmp}")
    port = next_port()
    job = scn.receiver(rx, dest, port, host="127.0.0.1")
    res = rx.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed 7 --phases send --id {xid} --size 3000",
        timeout=60.0,
        check=False,
    )
    m = re.search(r"done_status=(-?\d+)", res.output)
    assert m, f"forged sender got no DONE:\n{res.output}"
    got = job.wait(timeout=60.0)
    assert int(m[1]) < 0 and got.rc == 1, (
        f"transfer through a planted link: {res.output}\n{got.output}"
    )
    assert sha256(rx, target) == before, f"{rx.name}: the planted link was written through"
    assert rx.run(f"readlink {tmp}").output.strip() == target
    assert rx.run(f"test -e {dest}", check=False).rc != 0, "final name created anyway"


def test_proc_shows_no_paths_and_temp_is_private(scn: Scenario, cluster: ClusterView) -> None:
    """While root receives, nobody sees in /proc/net/p2pkp only the documented fields (no file
    names, no ids), and cannot read the 0600 temporary file."""
    rx = cluster["vm2"]
    dest = scn.path("private-name")
    port = next_port()
    job = scn.receiver(rx, dest, port, host="127.0.0.1", timeout_ms=20000)
    xid = "0123456789abcdef"
    # a forged sender STARTs a large transfer, sends its first chunk once the receiver has
    # accepted it (START_ACK; the chunk confirms it) and stops: the receiver holds it in RECV
    rx.run(
        f"{FORGE} --target 127.0.0.1:{port} --id {xid} --size {1 << 20} --chunks 1",
        timeout=60.0,
    )
    tmp = scn.path(f".private-name.p2pkp-{xid}")
    rx.wait_for(f"test -f {tmp}", timeout=30.0)
    mode = rx.run(f"stat -c '%a %U' {tmp}").output.strip()
    assert mode == "600 root", f"temporary file is {mode}"
    assert rx.run(f"{AS_NOBODY} head -c1 {tmp}", check=False).rc != 0
    proc = rx.run(f"{AS_NOBODY} cat /proc/net/p2pkp").output
    assert "private-name" not in proc and xid not in proc, proc
    kinds = {line.split()[0] for line in proc.splitlines() if line.strip()}
    assert kinds <= {"p2pkp", "sock", "peer", "total"}, proc
    assert re.search(rf"role=receiver state=receiving local=127\.0\.0\.1:{port}", proc), proc
    job.kill()


def test_datagrams_cannot_choose_the_path(scn: Scenario, cluster: ClusterView) -> None:
    """Forged transfers whose bytes are paths ("../../etc/passwd", "/etc/shadow", ...) plus the
    random wire campaign: the only new file in the guest's writable trees is the one the
    caller named."""
    rx = cluster["vm2"]
    dest = scn.path("only-here")
    marker = f"{scn.dir}-marker"
    # Files count as new when their mtime is after the marker's: wait until the file clock
    # (coarse, a jiffy) has moved past it instead of sleeping.
    rx.run(f"touch {marker}")
    rx.wait_for(f"touch {marker}.probe && test {marker}.probe -nt {marker}", timeout=10.0)
    rx.run(f"rm -f {marker}.probe")
    port = next_port()
    job = scn.receiver(rx, dest, port, host="127.0.0.1", timeout_ms=2000)
    # stateless first: its drop reasons are predicted exactly, which holds only while no
    # transfer is active; a random mutation may form a valid START that the receiver accepts.
    res = rx.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed 11 --phases stateless,random --count 2000",
        timeout=300.0,
        check=False,
    )
    assert res.rc == 0, res.output
    # Fake transfers of the random phase may hold the receiver until its peer timeout (2 s):
    # wait until it waits for a new transfer (/proc/net/p2pkp), then send the real one.
    rx.wait_for(
        f"grep -qE '^sock .*role=receiver state=waiting local=127\\.0\\.0\\.1:{port} ' "
        "/proc/net/p2pkp",
        timeout=60.0,
    )
    res = rx.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed 12 --phases send --size 20000",
        timeout=120.0,
        check=False,
    )
    assert "done_status=0" in res.output, res.output
    assert job.wait(timeout=60.0).rc == 0
    # The guest's writable trees are its own mounts: tmpfs, or overlays whose upper layer (a
    # tmpfs under /run) holds exactly what the guest wrote.  Walk that layer, never the
    # host's lower one: the host's /tmp (clones, venvs) over 9p took > 720 s on the debug
    # kernel.  The rest of / is the host's read-only root.
    candidates = "/tmp /etc /run /var/tmp /var/log /var/lib /root /home /dev/shm /mnt"
    walk = (
        f"for d in {candidates}; do mountpoint -q $d || continue; "
        'up=$(awk -v d=$d \'$2 == d && $3 == "overlay" { n = split($4, o, ","); '
        "for (i = 1; i <= n; i++) if (o[i] ~ /^upperdir=/) print substr(o[i], 10) }' "
        "/proc/mounts | tail -n 1); "
        f'if [ -n "$up" ]; then (cd "$up" && find . -xdev -newer {marker} '
        '\\( -type f -o -type l \\) | sed "s|^\\.|$d|"); '
        f"else find $d -xdev -newer {marker} \\( -type f -o -type l \\); fi; done"
    )
    new = rx.run(
        f"{{ {walk}; }} 2>/dev/null | grep -v -e '^/tmp/p2pkp-job-' -e '^/run/' || true",
        timeout=120.0,
    ).output.split()
    # The guest's /tmp and /etc are overlays on the host's: files the host (other sessions)
    # writes meanwhile show through.  A file written in the guest exists only there.
    guest_only = [p for p in new if not Path(p).exists()]
    assert guest_only == [dest], f"files created besides {dest}: {guest_only} (all new: {new})"
    rx.run(f"rm -f {marker}")
