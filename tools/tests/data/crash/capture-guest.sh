#!/bin/sh
# Runs inside the vng guest: provoke crash signatures one at a time, save dmesg after each.
O=/var/cache/p2pkp/crashcap/out
KO=/work/main/vmtests/crashme/crashme.ko
mkdir -p $O
dmesg -n 8
save() { dmesg > $O/$1.log; dmesg -r > $O/$1.raw; dmesg -C; echo "=== saved $1 ==="; }
save boot
insmod $KO || echo "INSMOD FAILED"
save insmod
act() { echo "=== action $1 ==="; sh -c "echo '$1' > /proc/crashme"; echo "=== rc $? ==="; }
act warn; save warn
act atomicsleep; save atomicsleep
echo 2 > /proc/sys/kernel/hung_task_timeout_secs
act "hung 9"; save hung
echo 120 > /proc/sys/kernel/hung_task_timeout_secs
echo 3 > /sys/module/rcupdate/parameters/rcu_cpu_stall_timeout
act "spin 9"; save rcustall
echo 21 > /sys/module/rcupdate/parameters/rcu_cpu_stall_timeout
echo 1 > /proc/sys/kernel/watchdog_thresh
act "spin 7"; save softlockup
echo 10 > /proc/sys/kernel/watchdog_thresh
act null; save null
act gpf; save gpf
act pagefault; save pagefault
act bug; save bug
echo "=== panic ==="
echo c > /proc/sysrq-trigger
