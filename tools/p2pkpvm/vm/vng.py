"""Pure construction of the vng (virtme-ng) command line for one guest."""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# Modules udev would load at boot for emulated hardware no test uses (q35's AHCI and DVD-ROM,
# ICH9 watchdog/SMBus/LPC, PC speaker, vng's i6300esb, KVM for `-cpu max`'s SVM, SIMD crypto
# drivers): under TCG that is most of udev's time.  4 guests of the Debian kernel on 2 cores
# reached their shells after 81-95 s with them, 55-62 s without (same machine, idle).  Guests
# now boot without udev (VngSpec.udev, without_udev()); the list still applies to one with it.
UNUSED_MODULES = (
    "kvm", "kvm_amd", "kvm_intel", "irqbypass", "ahci", "libahci", "sr_mod", "cdrom", "sg",
    "iTCO_wdt", "iTCO_vendor_support", "lpc_ich", "i2c_i801", "i6300esb", "pcspkr",
    "powernow_k8", "aesni_intel", "ghash_clmulni_intel", "polyval_clmulni", "crc32_pclmul",
    "crct10dif_pclmul", "sha1_ssse3", "sha256_ssse3", "sha512_ssse3", "serio_raw", "joydev",
    "evdev", "button", "drm", "bochs",
)  # fmt: skip
DEFAULT_APPEND = (
    "net.ifnames=0",
    "panic=-1",
    "loglevel=7",
    "modprobe.blacklist=" + ",".join(UNUSED_MODULES),
)

# The guest sees the host's file system, except these: virtme-ng's guest init mounts an
# empty tmpfs over each (virtme/guest/virtme-init: /run, /dev/shm, mount_sys_filesystems).
GUEST_MASKED = (
    "/run",
    "/dev/shm",
    "/var/log",
    "/var/tmp",
    "/var/cache",
    "/var/spool/rsyslog",
    "/var/lib/portables",
    "/var/lib/machines",
    "/var/lib/private",
    "/var/lib/apt",
    "/var/lib/snapd/cookie",
    "/var/lib/sudo",
)


def masked_in_guest(path: Path) -> str | None:
    """The directory of GUEST_MASKED that hides `path` inside a guest, or None."""
    for d in GUEST_MASKED:
        if path == Path(d) or Path(d) in path.parents:
            return d
    return None


# The MTU a virtio-net NIC comes up with when QEMU does not announce one (no host_mtu).
ETH_MTU = 1500


@dataclass(frozen=True)
class NicSpec:
    """One virtio-net NIC attached to a host tap device (in the run's namespace)."""

    tap: str
    mac: str
    netdev_id: str = "n0"
    device_options: str = ""  # appended to -device virtio-net-pci,... (",host_uso=off")
    # The guest NIC's MTU.  Any other than ETH_MTU is announced with virtio-net's host_mtu
    # (feature VIRTIO_NET_F_MTU): the guest's driver starts with it, and takes it as its
    # maximum.  ETH_MTU leaves the device as it always was (no host_mtu).
    mtu: int = ETH_MTU

    def __post_init__(self) -> None:
        if not 68 <= self.mtu <= 65535:
            raise ValueError(f"NIC MTU must be in 68..65535 (host_mtu is 16 bits), not {self.mtu}")

    def qemu_args(self) -> list[str]:
        mtu = f",host_mtu={self.mtu}" if self.mtu != ETH_MTU else ""
        return [
            "-netdev",
            f"tap,id={self.netdev_id},ifname={self.tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev={self.netdev_id},mac={self.mac}{mtu}{self.device_options}",
        ]


@dataclass(frozen=True)
class VngSpec:
    """Everything that defines how one guest is started."""

    kernel: Path
    name: str
    accel: str = "tcg"  # "kvm" or "tcg"
    cpus: int = 1
    memory: str = "512M"
    cwd: Path | None = None
    shell: Path | None = None
    nics: tuple[NicSpec, ...] = ()
    append: tuple[str, ...] = DEFAULT_APPEND
    extra_qemu: tuple[str, ...] = ("-no-reboot",)
    exec_cmd: tuple[str, ...] = field(default=())
    # Whether the guest runs udev.  Without it (the default) virtme-ng's init skips udev's
    # coldplug and settle, the longest part of a TCG boot (a single Debian guest on a loaded
    # 2-core host: 85 s of 117; the debug kernel's: over 10 minutes); nothing the tests use
    # needs udev (the harness loads virtio_net itself, libdevmapper makes its own nodes).
    udev: bool = False

    def __post_init__(self) -> None:
        if self.accel not in ("kvm", "tcg"):
            raise ValueError(f"accel must be 'kvm' or 'tcg', not {self.accel!r}")
        if self.cpus < 1:
            raise ValueError(f"cpus must be >= 1, not {self.cpus}")
        for what, p in (("working directory", self.cwd), ("shell", self.shell)):
            hidden = masked_in_guest(p) if p is not None else None
            if hidden:
                raise ValueError(
                    f"{what} {p} is under {hidden}, which virtme-ng replaces with an empty "
                    "tmpfs inside the guest: the guest could not see it. "
                    "Put the project elsewhere (e.g. under /tmp, /root or /work)."
                )


def build_argv(spec: VngSpec, vng: str = "vng") -> list[str]:
    """argv that boots `spec` (a shell on the console unless exec_cmd is given)."""
    argv = [
        vng,
        "--run",
        str(spec.kernel),
        "--name",
        spec.name,
        "--cpus",
        str(spec.cpus),
        "--memory",
        spec.memory,
        # 9p straight away: where a virtiofsd of the wrong kind is installed (QEMU 7.2's C
        # daemon), vng tries it and waits 3.1 s per guest before falling back to 9p.
        "--force-9p",
    ]
    if spec.accel == "tcg":
        argv.append("--disable-kvm")
    if spec.cwd is not None:
        argv += ["--cwd", str(spec.cwd)]
    if spec.shell is not None:
        argv += ["--shell", str(spec.shell)]
    for opt in spec.append:
        argv += ["--append", opt]
    qemu: list[str] = list(spec.extra_qemu)
    for nic in spec.nics:
        qemu += nic.qemu_args()
    if qemu:
        argv.append("--qemu-opts=" + shlex.join(qemu))
    if spec.exec_cmd:
        argv += ["--", *spec.exec_cmd]
    return argv


# Where virtme-ng's init looks for udevd (it skips udev when neither exists).
UDEVD_DIRS = ("/usr/lib/systemd", "/lib/systemd")


def without_udev(argv: list[str], dirs: tuple[str, ...] = UDEVD_DIRS) -> list[str]:
    """Wrap argv so that it runs in a mount namespace of its own in which an empty tmpfs hides
    each of `dirs` that exists (resolved, once each): QEMU's 9p server exports the host's root
    as seen from that namespace, so the guest finds no udevd.  The host is not touched and the
    mounts go with the last process of the namespace."""
    real: list[str] = []
    for d in dirs:
        p = Path(d)
        if p.is_dir():
            r = str(p.resolve())
            if r not in real:
                real.append(r)
    if not real:
        return argv
    mounts = " && ".join(
        f"mount -t tmpfs -o size=4k,mode=0755 p2pkp-no-udev {shlex.quote(r)}" for r in real
    )
    return [
        "unshare", "--mount", "--propagation", "private",
        "/bin/sh", "-c", f'{mounts} && exec "$@"', "sh", *argv,
    ]  # fmt: skip


def stderr_to_file(argv: list[str], path: Path) -> list[str]:
    """Wrap argv so that its stderr (the guest's kernel console) is appended to `path`."""
    return ["/bin/sh", "-c", 'f="$1"; shift; exec "$@" 2>>"$f"', "sh", str(path), *argv]


def guest_mac(run_id: str, index: int) -> str:
    """A locally administered unicast MAC, distinct per (run, guest index)."""
    if not 0 <= index <= 255:
        raise ValueError(f"guest index {index} out of range 0..255")
    digest = hashlib.sha256(run_id.encode()).digest()
    octets = [0x02, digest[0], digest[1], digest[2], digest[3], index]
    return ":".join(f"{o:02x}" for o in octets)
