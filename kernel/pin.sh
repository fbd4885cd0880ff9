#!/bin/sh
# Print one field of a kernel pin of configs/kernel-pin.yaml for make and shell scripts that
# run before the Python environment exists (p2pkpvm.kernel.pin reads the same file; the unit
# tests check that both agree).  PIN: a pin's name; empty or absent: the file's default.
# Usage: kernel/pin.sh name|names|abi|version|image|headers|source [PIN]
set -eu
file="${P2PKP_PIN_FILE:-$(dirname "$0")/../configs/kernel-pin.yaml}"
case "${1:-}" in
name|names|abi|version|image|headers|source) ;;
*) echo "usage: $0 name|names|abi|version|image|headers|source [PIN]" >&2; exit 2 ;;
esac
[ -r "$file" ] || { echo "kernel/pin.sh: cannot read $file" >&2; exit 2; }
awk -v field="$1" -v want="${2:-}" -v file="$file" '
function value(s) {
	s = substr(s, index(s, ":") + 1)
	sub(/[ \t]+#.*$/, "", s)
	gsub(/^[ \t]+|[ \t]+$/, "", s)
	gsub(/^"|"$/, "", s)
	return s
}
/^default:/ { def = value($0) }
/^  - name:/ { cur = value($0); names = names (names == "" ? "" : " ") cur; known[cur] = 1; next }
cur != "" && /^    [ ]*[a-z]+:/ {
	key = $0
	sub(/^ +/, "", key)
	key = substr(key, 1, index(key, ":") - 1)
	val[cur, key] = value($0)
}
END {
	if (field == "names") { print names; exit 0 }
	if (want == "") want = def
	if (!(want in known)) {
		printf "kernel/pin.sh: no kernel pin \"%s\" in %s (pins: %s)\n", want, file, names > "/dev/stderr"
		exit 2
	}
	if (field == "name") { print want; exit 0 }
	if (val[want, field] == "") {
		printf "kernel/pin.sh: pin %s has no %s in %s\n", want, field, file > "/dev/stderr"
		exit 2
	}
	print val[want, field]
}' "$file"
