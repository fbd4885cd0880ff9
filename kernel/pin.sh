#!/bin/sh
# Print one field of configs/kernel-pin.yaml (abi or version) for make and shell
# scripts that run before the Python environment exists.
# Usage: kernel/pin.sh abi|version
set -eu
pin="$(dirname "$0")/../configs/kernel-pin.yaml"
case "${1:-}" in
abi|version) ;;
*) echo "usage: $0 abi|version" >&2; exit 2 ;;
esac
value=$(sed -n "s/^$1:[[:space:]]*\([^[:space:]#]*\).*/\1/p" "$pin")
if [ -z "$value" ]; then
	echo "kernel/pin.sh: no '$1:' in $pin" >&2
	exit 2
fi
echo "$value"
