"""A power cut of a guest's disk, as xfstests simulates it: ext4 on dm-flakey over a loop
file; `cut()` makes every write from then on vanish, `remount()` brings the file system back
as a machine that lost power would find it (what reached the disk, the journal replayed).

Used by the durability tests (P2PKP_FSYNC: a file read() returned survives; P2PKP_RESUME:
a partial file keeps what its last checkpoint synced).  Guests run without udev: dmsetup
makes the /dev/mapper nodes itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from p2pkpvm.vm.guest import Guest


@dataclass(frozen=True)
class FlakeyDisk:
    """An ext4 file system on dm-flakey, mounted at `mnt` (mode 1777) on `vm`."""

    vm: Guest
    mnt: str
    dev: str  # the dm device's name
    loop: str  # the loop device under it

    def _table(self, target: str) -> str:
        return f'"0 $(blockdev --getsz {self.loop}) {target}"'

    def cut(self) -> None:
        """The power cut: every write from now on is dropped (reads still work)."""
        self.vm.run(
            f"dmsetup suspend --nolockfs {self.dev} && dmsetup load {self.dev} --table "
            + self._table(f"flakey {self.loop} 0 0 600 1 drop_writes")
            + f" && dmsetup resume {self.dev}"
        )

    def remount(self) -> None:
        """After the cut: unmount (what is cached is lost) and mount the disk as it is."""
        self.vm.run(
            f"umount {self.mnt} && dmsetup remove {self.dev} && dmsetup create {self.dev} "
            f"--table {self._table(f'linear {self.loop} 0')} && "
            f"dmsetup mknodes {self.dev} && mount /dev/mapper/{self.dev} {self.mnt}",
            timeout=120.0,
        )


@contextmanager
def flakey_disk(vm: Guest, workdir: str, name: str, size_mib: int = 64) -> Iterator[FlakeyDisk]:
    """A FlakeyDisk of size_mib (a sparse file in workdir, mounted at workdir + "-mnt"),
    torn down on exit whatever happened."""
    img, mnt, dev = f"{workdir}/{name}.img", f"{workdir}-mnt", f"p2pkp-{name}"
    vm.run(
        # modules on the stock kernel, built in on the kernels of `make kernel`
        "{ modprobe -q loop || test -e /dev/loop-control; } && "
        "{ modprobe -q dm_flakey; dmsetup targets | grep -qw flakey; } && "
        f"truncate -s {size_mib}M {img} && "
        f"LOOP=$(losetup -f --show {img}) && echo $LOOP > {img}.loop && "
        f'dmsetup create {dev} --table "0 $(blockdev --getsz $LOOP) flakey $LOOP 0 600 0" && '
        f"dmsetup mknodes {dev} && "
        f"mkfs.ext4 -q /dev/mapper/{dev} && mkdir -p {mnt} && mount /dev/mapper/{dev} {mnt} && "
        f"chmod 1777 {mnt} && sync",
        timeout=120.0,
    )
    loop = vm.run(f"cat {img}.loop").output.strip()
    try:
        yield FlakeyDisk(vm, mnt, dev, loop)
    finally:
        vm.run(
            f"umount {mnt}; dmsetup remove {dev}; losetup -d {loop}; rm -rf {mnt}",
            check=False,
            timeout=120.0,
        )
