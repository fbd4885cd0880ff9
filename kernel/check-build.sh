#!/bin/sh
# Refuse to build p2pkp.ko against anything but the headers of the chosen kernel pin, with
# a message that says what to do.  KDIR overrides the build tree: then only its presence is
# checked (building for another kernel is the user's call).  PIN: a pin's name (default: the
# default pin of configs/kernel-pin.yaml).
# Usage: kernel/check-build.sh KDIR [PIN]
set -eu
here=$(dirname "$0")
kdir=${1:?usage: $0 KDIR [PIN]}
name=$("$here/pin.sh" name "${2:-}")
abi=$("$here/pin.sh" abi "$name")
version=$("$here/pin.sh" version "$name")
headers=$("$here/pin.sh" headers "$name")
pinned="/lib/modules/$abi/build"

if [ ! -f "$kdir/Makefile" ]; then
	if [ "$kdir" = "$pinned" ]; then
		echo "error: headers of the kernel pin $name ($abi) are missing ($kdir)." >&2
		echo "       run 'make deps PIN=$name' (installs $headers=$version)." >&2
	else
		echo "error: KDIR=$kdir is not a kernel build tree (no Makefile)." >&2
	fi
	exit 1
fi
[ "$kdir" = "$pinned" ] || exit 0

have=$(dpkg-query -W -f='${Version}' "$headers" 2>/dev/null || true)
if [ "$have" != "$version" ]; then
	echo "error: $headers is at '${have:-not installed}', the pin $name says $version." >&2
	echo "       run 'make deps PIN=$name', or move the pin in configs/kernel-pin.yaml." >&2
	exit 1
fi
release=$(sed -n 's/^#define UTS_RELEASE "\(.*\)"/\1/p' "$kdir/include/generated/utsrelease.h" 2>/dev/null || true)
if [ "$release" != "$abi" ]; then
	echo "error: $kdir builds for '$release', the pin $name says $abi." >&2
	exit 1
fi
