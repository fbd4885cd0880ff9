#!/bin/sh
# Refuse to build p2pkp.ko against anything but the pinned kernel's headers,
# with a message that says what to do.  KDIR overrides the build tree: then
# only its presence is checked (building for another kernel is the user's call).
# Usage: kernel/check-build.sh KDIR
set -eu
here=$(dirname "$0")
abi=$("$here/pin.sh" abi)
version=$("$here/pin.sh" version)
kdir=${1:?usage: $0 KDIR}
pinned="/lib/modules/$abi/build"

if [ ! -f "$kdir/Makefile" ]; then
	if [ "$kdir" = "$pinned" ]; then
		echo "error: headers of the pinned kernel $abi are missing ($kdir)." >&2
		echo "       run 'make deps' (installs linux-headers-$abi=$version)." >&2
	else
		echo "error: KDIR=$kdir is not a kernel build tree (no Makefile)." >&2
	fi
	exit 1
fi
[ "$kdir" = "$pinned" ] || exit 0

have=$(dpkg-query -W -f='${Version}' "linux-headers-$abi" 2>/dev/null || true)
if [ "$have" != "$version" ]; then
	echo "error: linux-headers-$abi is at '${have:-not installed}', the pin says $version." >&2
	echo "       run 'make deps', or move the pin in configs/kernel-pin.yaml." >&2
	exit 1
fi
release=$(sed -n 's/^#define UTS_RELEASE "\(.*\)"/\1/p' "$kdir/include/generated/utsrelease.h" 2>/dev/null || true)
if [ "$release" != "$abi" ]; then
	echo "error: $kdir builds for '$release', the pin says $abi." >&2
	exit 1
fi
