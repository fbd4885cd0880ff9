#!/bin/sh
# Re-create the doc-*.log samples from the kernel's own documentation (linux-source-6.1,
# Debian 6.1.192-2). Each sample is a literal block of an .rst file with its indentation
# removed; nothing else is changed except where noted in README.md.
set -eu
SRC=${1:-/usr/src/linux-source-6.1.tar.xz}
OUT=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
tar -xJf "$SRC" -C "$TMP" --wildcards 'linux-source-6.1/Documentation/*'
D=$TMP/linux-source-6.1/Documentation
# block FILE FIRST LAST STRIP: lines FIRST..LAST of FILE, STRIP leading characters removed
block() { sed -n "$2,$3p" "$D/$1" | sed -E "s/^ {0,$4}//"; }
block dev-tools/kasan.rst 148 217 4 > "$OUT/doc-kasan-slab-out-of-bounds.log"
sed -n 19,45p "$D/dev-tools/ubsan.rst" | sed 's/^\t //' > "$OUT/doc-ubsan-shift-out-of-bounds.log"
block dev-tools/kmemleak.rst 242 254 8 > "$OUT/doc-kmemleak.log"
block dev-tools/kfence.rst 79 101 4 > "$OUT/doc-kfence-out-of-bounds.log"
block dev-tools/kcsan.rst 29 49 4 > "$OUT/doc-kcsan-data-race.log"
{ block RCU/lockdep-splat.rst 23 26 4; echo; echo "other info that might help us debug this:"; \
  block RCU/lockdep-splat.rst 29 61 4; } > "$OUT/doc-lockdep-suspicious-rcu.log"
sed -n 225,228p "$D/RCU/stallwarn.rst" | sed 's/^\t//' > "$OUT/doc-rcu-stall-other-cpus.log"
sed -n 44,47p "$D/admin-guide/bug-hunting.rst" | sed 's/^\t//' > "$OUT/doc-oops-old-format.log"
