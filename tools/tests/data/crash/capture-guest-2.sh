#!/bin/sh
# Inside the vng guest: the debug-kernel actions must be silent on the stock kernel; doublefree is not.
O=/var/cache/p2pkp/crashcap/out2
KO=/work/main/vmtests/crashme/crashme.ko
mkdir -p $O
insmod $KO || echo "INSMOD FAILED"
dmesg -C
act() { echo "=== action $1 ==="; sh -c "echo '$1' > /proc/crashme"; echo "=== rc $? ==="; }
act uaf; act oob; act leak; act lockorder; act "ubsan 0"
dmesg > $O/silent.log
dmesg -C
act doublefree
dmesg > $O/doublefree.log
echo "=== done ==="
