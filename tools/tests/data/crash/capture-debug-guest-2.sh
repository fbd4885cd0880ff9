#!/bin/sh
# Second debug-kernel boot: lockdep first. Any KASAN/UBSAN report taints the kernel
# with LOCKDEP_NOW_UNRELIABLE, which switches lockdep off for the rest of the boot,
# so in capture-debug-guest.sh (after uaf/oob/...) "lockorder" was silent.
#   vng -r BZIMAGE --disable-kvm -m 1G --append no5lvl --rwdir=OUT \
#       -- sh capture-debug-guest-2.sh OUT CRASHME_KO
# (without no5lvl, the second boot had an early-boot KASAN false positive: see README)
O=${1:?out dir}
CRASHME_KO=${2:?crashme.ko}
mkdir -p "$O"
dmesg > "$O/boot.log"; dmesg -C
insmod "$CRASHME_KO" || echo "INSMOD crashme FAILED"
dmesg -C
echo lockorder > /proc/crashme
dmesg > "$O/lockorder.log"; dmesg -C
echo "=== done ==="
