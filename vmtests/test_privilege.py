"""Privilege and path rules (issue 7, part 4): what an unprivileged user (nobody) or a forged
datagram can make the module do with files.  Each rule is its own test.

Guest setup as in test_errors.py: commands run as nobody:nogroup with no supplementary groups
(`AS_NOBODY`); files the tests plant are root-owned unless said otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario.scenario import (
    AS_NOBODY,
    WIRE,
    Guest,
    Scenario,
    dir_without_o_tmpfile,
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


def test_symlinks_at_id_derived_names_are_not_followed(scn: Scenario, cluster: ClusterView) -> None:
    """A sender chooses the transfer id, so no name on the receiver may derive from it.  (v1
    wrote .<base>.p2pkp-<id>, and this test planted a symlink there and expected the transfer
    to fail without writing through it; v2 writes an O_TMPFILE, or a hidden fallback name
    drawn from get_random_u64() at read() time, so the v2 claim is stronger.)  nobody plants
    symlinks to a root-owned file at every name the id could give (v1's and .p2pkp-<id>); a
    forged sender then uses that id: the transfer completes bit-exact into DEST, the target is
    untouched and the links still point where they did."""
    rx = cluster["vm2"]
    target, before = victim(rx, scn)
    xid = "00000000deadbeef"
    dest = scn.path("incoming")
    links = [scn.path(f".incoming.p2pkp-{xid}"), scn.path(f".p2pkp-{xid}")]
    for link in links:
        rx.run(f"{AS_NOBODY} ln -s {target} {link}")
    port = next_port()
    job = scn.receiver(rx, dest, port, host="127.0.0.1")
    res = rx.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed 7 --phases send --id {xid} --size 3000",
        timeout=60.0,
        check=False,
    )
    m = re.search(r"sha256=([0-9a-f]{64}) done_status=(-?\d+)", res.output)
    assert m, f"forged sender got no DONE:\n{res.output}"
    got = job.wait(timeout=60.0)
    assert m[2] == "0" and got.rc == 0, f"{res.output}\n{got.output}"
    assert sha256(rx, target) == before, f"{rx.name}: a planted link was written through"
    for link in links:
        assert rx.run(f"readlink {link}").output.strip() == target
    assert rx.run(f"test -f {dest} && ! test -L {dest}", check=False).rc == 0
    assert sha256(rx, dest) == m[1]


@pytest.mark.parametrize("fs", ["tmpfs", "no-tmpfile"])
def test_proc_shows_no_paths_and_partial_file_is_private(
    scn: Scenario, cluster: ClusterView, fs: str
) -> None:
    """While root receives, nobody sees in /proc/net/p2pkp only the documented fields (no file
    names, no ids), and cannot read the partly received file: an O_TMPFILE has no name; where
    the file system has no O_TMPFILE (here a FUSE mirror whose modes the kernel checks, see
    dir_without_o_tmpfile) the fallback .p2pkp-<random> must not be readable by others, as
    v1's 0600 temporary file was not.  Fails at 29c11bf: p2pkp_rx_arm() creates the fallback
    with mode 0666 (0644 under umask 022), at read() time, and nobody reads it."""
    rx = cluster["vm2"]
    with ExitStack() as stack:
        # the scenario directory is a tmpfs (O_TMPFILE)
        where = scn.dir
        if fs == "no-tmpfile":
            where = stack.enter_context(dir_without_o_tmpfile(rx, f"{scn.dir}-nottmp"))
        dest = f"{where}/private-name"
        port = next_port()
        job = scn.receiver(rx, dest, port, host="127.0.0.1", timeout_ms=20000)
        # a forged sender has its transfer accepted, sends one chunk and goes silent: the
        # receiver holds it in RECV
        res = rx.run(
            f"{WIRE} --target 127.0.0.1:{port} --seed 8 --phases stale --size 1048576",
            timeout=60.0,
        )
        m = re.search(r"stale id=([0-9a-f]{16})", res.output)
        assert m, res.output
        xid = m[1]
        proc = rx.run(f"{AS_NOBODY} cat /proc/net/p2pkp").output
        assert "private-name" not in proc and xid not in proc, proc
        kinds = {line.split()[0] for line in proc.splitlines() if line.strip()}
        assert kinds <= {"p2pkp", "sock", "peer", "total"}, proc
        assert re.search(rf"role=receiver state=receiving local=127\.0\.0\.1:{port}", proc), proc
        names = listing(rx, where)
        if fs == "tmpfs":
            assert names == [], f"an O_TMPFILE has no name, but {where} shows {names}"
        else:
            assert len(names) == 1 and names[0].startswith(".p2pkp-"), f"visible names: {names}"
        for n in names:
            path = q(f"{where}/{n}")
            mode = rx.run(f"stat -c '%a %U' {path}").output.strip()
            readable = rx.run(f"{AS_NOBODY} head -c1 {path}", check=False).rc == 0
            assert not readable, f"nobody reads the partly received file {n} (mode {mode})"
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
    # stateless, then random: both checked exactly (v2: without the cookie no datagram can
    # have a transfer accepted, so the receiver stays idle throughout)
    res = rx.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed 11 --phases stateless,random --count 2000",
        timeout=300.0,
        check=False,
    )
    assert res.rc == 0, res.output
    assert "exact=0" not in res.output, res.output
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
    # The test's own directory is a tmpfs of its own (Scenario mounts one per test), which
    # find -xdev does not enter from /tmp: it is a candidate of its own.
    candidates = f"/tmp {scn.dir} /etc /run /var/tmp /var/log /var/lib /root /home /dev/shm /mnt"
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
