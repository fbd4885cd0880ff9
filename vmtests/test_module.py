"""Module lifecycle: rmmod while in use, load/unload cycles, /proc/net/p2pkp, the family."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from p2pkp_guest import wire
from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario.scenario import SEND, Guest, Scenario, module_ko, next_port, op, op_result, q

FAMILY_PARAM = "/sys/module/p2pkp/parameters/family"
# A family number no Debian 6.1 module or built-in claims (NETBEUI was never implemented).
OTHER_FAMILY = 13


@pytest.fixture
def scn(scn: Scenario, cluster: ClusterView) -> Iterator[Scenario]:
    """conftest's scn, and afterwards the module as the next test expects it: loaded with
    its defaults."""
    yield scn
    for vm in cluster.vms:
        vm.run(f"grep -q '^p2pkp ' /proc/modules || insmod {module_ko(vm)}")


def loaded(vm: Guest) -> bool:
    return vm.run("grep -q '^p2pkp ' /proc/modules", check=False).rc == 0


def test_rmmod_refused_while_socket_open(scn: Scenario, cluster: ClusterView) -> None:
    """An open socket pins the module (owner THIS_MODULE): rmmod fails, and works after close."""
    vm = cluster["vm1"]
    job = scn.op_job(vm, ["socket", "echo:open", "sleep:600000"], "open")
    res = vm.run("rmmod p2pkp 2>&1", check=False)
    assert res.rc != 0, f"{vm.name}: rmmod succeeded with a socket open:\n{res.output}"
    assert "in use" in res.output, res.output
    assert loaded(vm)
    job.kill()
    vm.wait_for("rmmod p2pkp", timeout=30.0)
    assert not loaded(vm)


def test_load_unload_ten_times(scn: Scenario, cluster: ClusterView) -> None:
    """insmod/socket/rmmod 10 times in a row, with no kernel warning on the way."""
    vm = cluster["vm1"]
    vm.run("rmmod p2pkp")
    before = vm.run("dmesg | grep -cE 'WARNING|BUG|Oops|refcount' || true").output.strip()
    for i in range(10):
        vm.run(f"insmod {module_ko(vm)}")
        out = op(vm, ["socket", "close"])
        assert re.search(r"^socket = \d+$", out, re.MULTILINE), f"cycle {i}: {out}"
        vm.run("rmmod p2pkp")
        assert not loaded(vm), f"cycle {i}: still loaded after rmmod"
    after = vm.run("dmesg | grep -cE 'WARNING|BUG|Oops|refcount' || true").output.strip()
    assert before == after, vm.run("dmesg | tail -50").output


def proc_net(vm: Guest) -> str:
    return vm.run("cat /proc/net/p2pkp").output


def totals(text: str) -> dict[str, int]:
    """The counters of the 'total k=v ...' line of /proc/net/p2pkp (this namespace's sum)."""
    m = re.search(r"^total((?: [a-z_]+=\d+)+)$", text, re.MULTILINE)
    if m is None:
        raise AssertionError(f"/proc/net/p2pkp has no 'total' line:\n{text}")
    return {k: int(v) for k, v in re.findall(r"([a-z_]+)=(\d+)", m[1])}


def test_proc_net_lists_sockets_and_counters(scn: Scenario, cluster: ClusterView) -> None:
    """/proc/net/p2pkp lists a bound socket and a sender; file/byte counters follow a transfer."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    size = 50_000
    src, _ = scn.make_file(tx, "src", size)
    port = next_port()
    before_rx, before_tx = totals(proc_net(rx)), totals(proc_net(tx))
    job = scn.receiver(rx, scn.path("dst"), port)
    text = proc_net(rx)
    assert re.search(rf"^sock .*role=receiver .*local=0\.0\.0\.0:{port} ", text, re.M), (
        f"{rx.name}: the bound socket is not listed:\n{text}"
    )
    sender = scn.op_job(
        tx, ["socket", f"connect:{rx.ipv4}:{port}", "echo:ready", "sleep:600000"], "ready"
    )
    text = proc_net(tx)
    assert re.search(
        rf"^sock .*role=sender .*peers=1 .*peer0={re.escape(rx.ipv4)}:{port}", text, re.M
    ), f"{tx.name}: the sender socket is not listed:\n{text}"
    sender.kill()
    tx.run(f"{SEND} --to {rx.ipv4}:{port} {q(src)}", timeout=60.0)
    assert job.wait(timeout=60.0).rc == 0
    after_rx, after_tx = totals(proc_net(rx)), totals(proc_net(tx))
    assert after_rx["files_received"] - before_rx["files_received"] == 1, (before_rx, after_rx)
    assert after_rx["bytes_received"] - before_rx["bytes_received"] == size, (before_rx, after_rx)
    assert after_rx["dgrams_received"] > before_rx["dgrams_received"], (before_rx, after_rx)
    assert after_tx["files_sent"] - before_tx["files_sent"] == 1, (before_tx, after_tx)
    assert after_tx["bytes_sent"] - before_tx["bytes_sent"] >= size, (before_tx, after_tx)
    chunk = wire.chunk_for(1500)
    assert after_tx["dgrams_sent"] - before_tx["dgrams_sent"] >= size // chunk, (
        before_tx,
        after_tx,
    )


def test_family_param_readable(scn: Scenario, cluster: ClusterView) -> None:
    """The family is in /sys/module/p2pkp/parameters/family; family=N moves it and tools follow."""
    vm = cluster["vm1"]
    family = int(vm.run(f"cat {FAMILY_PARAM}").output.strip())
    assert 0 < family < 46, family
    out = op(vm, [f"socket:dgram:0:{family}"])
    assert re.search(r"^socket = \d+$", out, re.MULTILINE), out
    vm.run("rmmod p2pkp")
    vm.run(f"insmod {module_ko(vm)} family={OTHER_FAMILY}")
    assert vm.run(f"cat {FAMILY_PARAM}").output.strip() == str(OTHER_FAMILY)
    out = op(vm, [f"socket:dgram:0:{family}", f"socket:dgram:0:{OTHER_FAMILY}", "socket"])
    assert op_result(out, "socket").startswith("-1 EAFNOSUPPORT"), out
    fds = re.findall(r"^socket = (\d+)$", out, re.MULTILINE)
    assert len(fds) == 2, f"family {OTHER_FAMILY} (explicit and from sysfs) should work:\n{out}"
    vm.run("rmmod p2pkp")
    res = vm.run(f"insmod {module_ko(vm)} family=2 2>&1", check=False)
    assert res.rc != 0, f"family=2 (AF_INET, taken) was accepted:\n{res.output}"


SHA_LINE = re.compile(
    r"^p2pkp version=\d+ family=\d+ sha256=(lib|crypto) sha256_lib_Bps=(\d+) "
    r"sha256_crypto=(\S+) sha256_crypto_Bps=(\d+)$",
    re.MULTILINE,
)


def sha_choice(vm: Guest) -> tuple[str, int, str, int]:
    """(choice, library rate, crypto driver, crypto rate) from /proc/net/p2pkp's header."""
    text = proc_net(vm)
    m = SHA_LINE.search(text)
    assert m, f"{vm.name}: no sha256 fields in the header of /proc/net/p2pkp:\n{text}"
    return m[1], int(m[2]), m[3], int(m[4])


def test_sha256_fastest_at_load_and_forced(scn: Scenario, cluster: ClusterView) -> None:
    """Issue 14 item 4: at load the module times the library's SHA-256 and the crypto API's
    sha256 (its best driver) and hashes files with the faster; /proc/net/p2pkp shows the
    choice, both rates and the driver. sha256=lib|crypto forces one, anything else refuses
    to load (EINVAL). A file hashed by the crypto API on the sender verifies with the library
    on the receiver, and the other way round."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    choice, lib, driver, crypto = sha_choice(tx)
    print(f"{tx.name}: sha256={choice} lib={lib} B/s {driver}={crypto} B/s")
    assert lib > 0 and crypto > 0 and driver.startswith("sha256"), (lib, driver, crypto)
    assert choice == ("crypto" if crypto > lib else "lib"), (choice, lib, crypto)
    assert tx.run("cat /sys/module/p2pkp/parameters/sha256").output.strip() == "auto"
    tx.run("rmmod p2pkp")
    res = tx.run(f"insmod {module_ko(tx)} sha256=md5 2>&1", check=False)
    # insmod words EINVAL from init_module as "Invalid parameters"
    assert res.rc != 0 and "Invalid parameters" in res.output, res.output
    assert "sha256=md5: expected auto, lib or crypto" in tx.run("dmesg | tail -5").output
    try:
        for sender, receiver in (("crypto", "lib"), ("lib", "crypto")):
            for vm, impl in ((tx, sender), (rx, receiver)):
                vm.run(f"rmmod p2pkp 2>/dev/null; insmod {module_ko(vm)} sha256={impl}")
                assert sha_choice(vm)[0] == impl, proc_net(vm)
            src, digest = scn.make_file(tx, f"src-{sender}", 3 * 1000 * 1000 + 7)
            dst = scn.path(f"dst-{sender}")
            port = next_port()
            job = scn.receiver(rx, dst, port)
            tx.run(f"{SEND} --to {rx.ipv4}:{port} {q(src)}", timeout=120.0)
            assert job.wait(timeout=60.0).rc == 0
            got = rx.run(f"sha256sum {q(dst)}").output.split()[0]
            assert got == digest, f"{sender} -> {receiver}: content differs"
    finally:
        for vm in (tx, rx):  # the defaults again for the next tests
            vm.run(f"rmmod p2pkp 2>/dev/null; insmod {module_ko(vm)}", check=False)
