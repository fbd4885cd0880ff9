#!/bin/sh
# Inside a vng guest running the debug kernel (`make kernel`), booted with
# kasan_multi_shot so that every KASAN report prints, not only the first:
#   vng -r BZIMAGE --disable-kvm -m 1G --append kasan_multi_shot --rwdir=OUT \
#       -- sh capture-debug-guest.sh OUT P2PKP_KO CRASHME_KO
# 1. p2pkp.ko built against the debug tree: load, loopback transfer, unload,
#    kmemleak scan (must all be silent);
# 2. crashme.ko built against the debug tree: one action per dmesg file.
O=${1:?out dir}
P2PKP_KO=${2:?p2pkp.ko}
CRASHME_KO=${3:?crashme.ko}
BIN=/work/main/tools
mkdir -p "$O"
step() { echo "=== $* ==="; }
save() { dmesg > "$O/$1.log"; dmesg -C; }
leakscan() {
	# kmemleak reports an object once it is 5 s old and unreferenced in two scans.
	sleep 6
	echo scan > /sys/kernel/debug/kmemleak
	echo scan > /sys/kernel/debug/kmemleak
	cat /sys/kernel/debug/kmemleak > "$O/$1.kmemleak"
}

cat /proc/uptime > "$O/uptime-at-script.txt"
uname -r > "$O/uname.txt"
save boot
ip link set lo up

step p2pkp
insmod "$P2PKP_KO" || echo "INSMOD p2pkp FAILED"
head -c 8388608 /dev/urandom > /tmp/in.bin
mkdir -p /tmp/rx
"$BIN/p2pkp-recv" --listen 127.0.0.1 --out /tmp/rx/out.bin --count 1 --verbose > "$O/p2pkp-recv.txt" 2>&1 &
rx=$!
for i in 1 2 3 4 5 6 7 8 9 10; do
	grep -q ":1BCD" /proc/net/udp 2>/dev/null && break
	sleep 1
done
t0=$(cut -d' ' -f1 /proc/uptime)
"$BIN/p2pkp-send" --to 127.0.0.1 --verbose /tmp/in.bin > "$O/p2pkp-send.txt" 2>&1
echo "send rc $?" >> "$O/p2pkp-send.txt"
wait $rx
echo "recv rc $?" >> "$O/p2pkp-recv.txt"
t1=$(cut -d' ' -f1 /proc/uptime)
echo "loopback 8 MiB: $t0 -> $t1" >> "$O/p2pkp-send.txt"
cmp /tmp/in.bin /tmp/rx/out.bin && echo "CMP OK" >> "$O/p2pkp-recv.txt"
cat /proc/net/p2pkp > "$O/proc-net-p2pkp.txt" 2>&1
rmmod p2pkp || echo "RMMOD p2pkp FAILED"
leakscan p2pkp
save p2pkp

step crashme
insmod "$CRASHME_KO" || echo "INSMOD crashme FAILED"
save insmod-crashme
act() { step "action $1"; sh -c "echo '$1' > /proc/crashme"; echo "rc $?"; }
act uaf; save uaf
act oob; save oob
act doublefree; save doublefree
act "ubsan 0"; save ubsan
act lockorder; save lockorder
act atomicsleep; save atomicsleep
act leak; leakscan leak; save leak
step done
