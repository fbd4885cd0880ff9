"""The wire format is defined once for Python (p2pkp_guest.wire) and matches the module's C:
header layout, message types, body lengths, flags, limits and counter names are read from
p2pkp.c / p2pkp.h (tests/cdefs.py, generic), never restated here.  The wire fuzzer's own
constants (tools/p2pkp_guest/wirefuzz.py) are held to the same C."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest

from p2pkp_guest import wire, wirefuzz
from p2pkpvm.paths import project_root
from tests import cdefs


@pytest.fixture(scope="module")
def c() -> cdefs.CDefs:
    root = project_root()
    text = (root / "p2pkp.h").read_text() + "\n" + (root / "p2pkp.c").read_text()
    return cdefs.parse(text)


def c_types(c: cdefs.CDefs) -> dict[str, int]:
    """P2PKP_T_<NAME> of the C enum, without the P2PKP_T_MAX alias."""
    return {
        k.removeprefix("P2PKP_T_"): v
        for k, v in c.enums.items()
        if k.startswith("P2PKP_T_") and k != "P2PKP_T_MAX"
    }


def fmt_sizes(s: struct.Struct) -> list[int]:
    return [struct.calcsize(">" + ch) for ch in s.format.lstrip("<>!=@")]


def test_magic_version_flags(c: cdefs.CDefs) -> None:
    assert c.defines["P2PKP_MAGIC"] == wire.MAGIC
    assert c.defines["P2PKP_VERSION"] == wire.VERSION
    c_flags = {k.removeprefix("P2PKP_F_"): v for k, v in c.defines.items() if "_F_" in k}
    assert c_flags == wire.FLAGS


def test_message_types(c: cdefs.CDefs) -> None:
    assert c_types(c), "no P2PKP_T_* enum found in the C source"
    assert c_types(c) == wire.TYPES


def test_header_layout(c: cdefs.CDefs) -> None:
    c_fields = c.structs["p2pkp_hdr"]
    assert fmt_sizes(wire.HEADER) == [size for _, size in c_fields], c_fields
    assert wire.HEADER.size == c.sizeof("p2pkp_hdr")


def test_body_lengths(c: cdefs.CDefs) -> None:
    body = c.arrays["p2pkp_fixed_len"]
    want = {c.enums[k]: v for k, v in body.items()}
    assert want == wire.FIXED_LEN
    for name, s in (
        ("p2pkp_start", wire.START_BODY),
        ("p2pkp_start_ack", wire.START_ACK_BODY),
        ("p2pkp_ack", wire.ACK_BODY),
        ("p2pkp_status", wire.STATUS_BODY),
    ):
        assert s.size == c.sizeof(name), name
    assert c.sizeof("p2pkp_group") == wire.GROUP_EXT == wire.GROUP_BODY.size


def test_type_flags_and_directions(c: cdefs.CDefs) -> None:
    flags = {c.enums[k]: v for k, v in c.arrays["p2pkp_type_flags"].items()}
    assert flags == wire.TYPE_FLAGS
    s2r, r2s = c.defines["P2PKP_S2R"], c.defines["P2PKP_R2S"]
    assert {t for t in wire.TYPES.values() if s2r & (1 << t)} == set(wire.TO_RECEIVER)
    assert {t for t in wire.TYPES.values() if r2s & (1 << t)} == set(wire.TO_SENDER)


def test_limits(c: cdefs.CDefs) -> None:
    assert c.defines["P2PKP_CHUNK_SIZE"] == wire.CHUNK_SIZE
    assert c.defines["P2PKP_CHUNK_MIN"] == wire.CHUNK_MIN
    assert c.defines["P2PKP_CHUNK_MAX"] == wire.CHUNK_MAX
    assert c.defines["P2PKP_WIN"] == wire.WIN
    assert c.defines["P2PKP_MAX_SIZE"] == wire.MAX_SIZE
    assert c.defines["P2PKP_MAC_LEN"] == wire.MAC_LEN
    assert c.defines["P2PKP_KEY_SIZE"] == wire.KEY_LEN
    assert c.defines["P2PKP_DGRAM_MAX"] == wire.DGRAM_MAX
    assert c.defines["P2PKP_ACKLOG_MAX"] == wire.ACKLOG_MAX


def test_counter_names_and_drop_reasons(c: cdefs.CDefs) -> None:
    names = c.strings["p2pkp_stat_names"]
    assert list(wire.STAT_NAMES) == names
    assert [n for n in names if n.startswith("drop_")] == list(wire.DROP_REASONS)


def test_wire_fuzzer_has_no_copy_of_its_own() -> None:
    """The fuzzer takes the wire's constants from p2pkp_guest.wire: it assigns none of
    their names itself (parsed from its source), so it cannot drift from the C either."""
    tree = ast.parse(Path(wirefuzz.__file__).read_text())
    assigned = {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    own = {n for n in vars(wire) if n.isupper()} & assigned
    assert not own, f"wirefuzz.py defines its own {sorted(own)}"
    imported = {
        a.asname or a.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "p2pkp_guest.wire"
        for a in node.names
    }
    assert {"MAGIC", "VERSION", "HDR", "FIXED_LEN", "REASONS", "TYPE_FLAGS"} <= imported


def test_reader_sees_a_changed_c_definition(tmp_path: Path) -> None:
    """The checker reads the C generically: a new type, counter or field shows up."""
    changed = (
        "enum {\n\tP2PKP_T_START = 1,\n\tP2PKP_T_NEW,\n};\n"
        "struct p2pkp_hdr {\n\t__be32 magic;\n\tu8 version;\n\tu8 type;\n\t__be16 flags;\n"
        "\t__be64 id;\n\t__be64 cookie;\n} __packed;\n"
        'static const char * const p2pkp_stat_names[P2PKP_NSTATS] = {\n\t"drop_x", "y",\n};\n'
        "#define P2PKP_VERSION\t\t2\n"
    )
    d = cdefs.parse(changed)
    assert c_types(d) == {"START": 1, "NEW": 2}
    assert d.sizeof("p2pkp_hdr") == 24 and d.defines["P2PKP_VERSION"] == 2
    assert d.strings["p2pkp_stat_names"] == ["drop_x", "y"]


@pytest.mark.parametrize(
    ("mtu", "ipv6", "key", "chunk"),
    [
        (1500, False, False, 1432),
        (1500, True, False, 1412),
        (1500, True, True, 1396),
        (9000, False, False, 8932),
        (65520, False, False, 65000),
        (65067, False, False, 64999),
        (580, False, False, 512),
        (579, False, False, 0),
        (552, False, False, 0),
        (1280, True, True, 1176),
    ],
)
def test_chunk_for_path_mtu(mtu: int, ipv6: bool, key: bool, chunk: int) -> None:
    """docs/protocol.md 3.4's examples: 1432 on a 1500-byte IPv4 link, 8932 at 9000, capped at
    65000; a path too small for a 512-byte chunk gives 0 (512-byte chunks in fragments)."""
    assert wire.chunk_for(mtu, ipv6, key) == chunk
