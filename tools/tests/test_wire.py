"""The wire format is defined once for Python (p2pkp_guest.wire) and matches the module's C:
header layout, message types, body lengths, flags, limits and counter names are read from
p2pkp.c / p2pkp.h (tests/cdefs.py, generic), never restated here.  The wire fuzzer's own
constants (tools/p2pkp_guest/wirefuzz.py) are held to the same C."""

from __future__ import annotations

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
    body = c.arrays["p2pkp_body_len"]
    want = {c.enums[k]: v for k, v in body.items()}
    assert want == wire.BODY_LEN


def test_limits(c: cdefs.CDefs) -> None:
    assert c.defines["P2PKP_CHUNK_SIZE"] == wire.CHUNK_SIZE
    assert c.defines["P2PKP_WIN"] == wire.WIN
    assert c.defines["P2PKP_MAX_SIZE"] == wire.MAX_SIZE
    assert c.defines["P2PKP_DGRAM_MAX"] == wire.DGRAM_MAX


def test_counter_names_and_drop_reasons(c: cdefs.CDefs) -> None:
    names = c.strings["p2pkp_stat_names"]
    assert list(wire.STAT_NAMES) == names
    assert [n for n in names if n.startswith("drop_")] == list(wire.DROP_REASONS)


def test_wire_fuzzer_matches_the_c(c: cdefs.CDefs) -> None:
    """The fuzzer keeps its own copies (it is rewritten with each wire version): they too
    must be the module's."""
    assert (wirefuzz.MAGIC, wirefuzz.VERSION) == (wire.MAGIC, wire.VERSION)
    assert fmt_sizes(wirefuzz.HDR) == [size for _, size in c.structs["p2pkp_hdr"]]
    assert c.enums["P2PKP_T_MAX"] == wirefuzz.T_MAX
    assert wirefuzz.BODY_LEN == wire.BODY_LEN
    assert list(wirefuzz.REASONS) == list(wire.DROP_REASONS)
    assert (wirefuzz.CHUNK, wirefuzz.WIN) == (wire.CHUNK_SIZE, wire.WIN)


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
