"""Unit tests of the kernel pins and of `make deps` (no VM, no apt: captured real output)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from p2pkpvm.kernel import apt, deps
from p2pkpvm.kernel.pin import PinError, load_pin, load_pins, parse_pins
from p2pkpvm.paths import project_root

DATA = Path(__file__).parent / "data"
PIN_FILE = project_root() / "configs" / "kernel-pin.yaml"
REAL = PIN_FILE.read_text()
FIELDS = ("abi", "version", "image", "headers", "source")


def pin_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(project_root() / "kernel" / "pin.sh"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def test_repo_pins() -> None:
    pins = load_pins()
    assert pins.names() == ["6.1", "6.12"] and pins.default == "6.1"
    old, new = pins.get("6.1"), pins.get("6.12")
    assert (old.abi, old.version) == ("6.1.0-56-amd64", "6.1.192-2")
    assert (new.abi, new.version) == ("6.12.117+deb12-amd64", "6.12.117-1~deb12u1")
    assert new.packages() == {
        "linux-image-6.12.117+deb12-amd64": "6.12.117-1~deb12u1",
        "linux-headers-6.12.117+deb12-amd64": "6.12.117-1~deb12u1",
        "linux-source-6.12": "6.12.117-1~deb12u1",
    }
    assert new.vmlinuz == Path("/boot/vmlinuz-6.12.117+deb12-amd64")
    assert new.build_dir == Path("/lib/modules/6.12.117+deb12-amd64/build")
    assert new.source_tarball == Path("/usr/src/linux-source-6.12.tar.xz")
    assert (old.is_default, old.tag, new.is_default, new.tag) == (True, "", False, "-6.12")


@pytest.mark.parametrize("name", ["6.1", "6.12", ""])
def test_pin_sh_agrees_with_python(name: str) -> None:
    """make and the shell scripts read the file with awk: the same answers as the parser."""
    pin = load_pins().get(name or load_pins().default)
    want = {
        "abi": pin.abi,
        "version": pin.version,
        "image": pin.image_pkg,
        "headers": pin.headers_pkg,
        "source": pin.source_pkg,
    }
    for field in FIELDS:
        proc = pin_sh(field, name)
        assert (proc.returncode, proc.stdout.strip()) == (0, want[field]), proc.stderr
    assert pin_sh("name", name).stdout.strip() == pin.name
    assert pin_sh("names").stdout.split() == load_pins().names()


def test_pin_sh_refuses_an_unknown_pin() -> None:
    proc = pin_sh("abi", "6.2")
    assert proc.returncode == 2 and proc.stdout == ""
    assert 'no kernel pin "6.2"' in proc.stderr and "(pins: 6.1 6.12)" in proc.stderr


def test_pin_sh_reads_another_file(tmp_path: Path) -> None:
    other = tmp_path / "pins.yaml"
    other.write_text(REAL.replace('default: "6.1"', 'default: "6.12"'))
    proc = pin_sh("abi", env={"P2PKP_PIN_FILE": str(other), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.strip() == "6.12.117+deb12-amd64"
    assert parse_pins(other.read_text()).get(None).name == "6.12"


def test_selection_by_name_or_default_never_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pin travels as an argument (make passes --pin): no environment side channel."""
    monkeypatch.setenv("P2PKP_PIN", "6.12")
    monkeypatch.setenv("PIN", "6.12")
    assert load_pin().name == "6.1" and load_pin("").name == "6.1"
    assert load_pin("6.12").name == "6.12"
    with pytest.raises(PinError, match=r"no kernel pin '5.10': the pins are 6.1, 6.12"):
        load_pin("5.10")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('default: "6.1"', 'default: "6.1', "not valid YAML"),
        ('default: "6.1"', 'default: "6.6"', "default '6.6' is not one of the pins"),
        ('default: "6.1"', "default: 6.1", "'default' must be a quoted pin name"),
        ('- name: "6.12"', "- name: 6.12", r"'name' must be a quoted string .* \(got 6.12:"),
        ('- name: "6.12"', '- name: "6.13"', r"abi '6.12.117\+deb12-amd64' is not a 6.13"),
        ("version: 6.12.117-1~deb12u1", "version: latest", "version 'latest'"),
        ("version: 6.1.192-2", "version: 6.12.117-1", "not of the form 6.1.N-R"),
        (
            "image: linux-image-6.1.0-56-amd64",
            "image: linux-image-6.1.0-55-amd64",
            "'linux-image-6.1.0-55-amd64' is not linux-image-6.1.0-56-amd64",
        ),
        ("source: linux-source-6.12", "source: linux-source-6.1", "is not linux-source-6.12"),
        ("    abi: 6.1.0-56", "    kernel: x\n    abi: 6.1.0-56", r"unknown key\(s\) kernel"),
        ("      source: linux-source-6.12\n", "", r"\(6.12\): 'source' must be"),
    ],
)
def test_bad_pins_say_why(old: str, new: str, message: str) -> None:
    assert old in REAL
    with pytest.raises(PinError, match=message):
        parse_pins(REAL.replace(old, new, 1))


def test_a_pin_listed_twice() -> None:
    first = REAL[REAL.index('  - name: "6.1"') : REAL.index('  - name: "6.12"')]
    with pytest.raises(PinError, match=r"pin '6\.1' is listed twice"):
        parse_pins(REAL + first)


def test_no_pins() -> None:
    with pytest.raises(PinError, match="'pins' must be a non-empty list"):
        parse_pins('default: "6.1"\npins: []\n')
    with pytest.raises(PinError, match="expected a mapping"):
        parse_pins("- a\n- b\n")


def test_abi_pattern_finds_other_uploads_of_the_series_only() -> None:
    """`make deps` lists the ABIs a pin could move to: images of the same series and flavour
    (captured `apt-cache search --names-only`), not -dbg, -unsigned, cloud or rt ones."""
    pins = load_pins()
    new = pins.get("6.12")
    text = (DATA / "apt-search-linux-image-6.12.txt").read_text()
    names = apt.parse_search(text, re.compile("linux-image-" + new.abi_pattern.pattern))
    assert names[-1] == "linux-image-6.12.117+deb12-amd64"
    assert "linux-image-6.12.100+deb12-amd64" in names and len(names) == 7
    old = pins.get("6.1")
    text = (DATA / "apt-search-linux-image-6.1.txt").read_text()
    names = apt.parse_search(text, re.compile("linux-image-" + old.abi_pattern.pattern))
    assert "linux-image-6.1.0-56-amd64" in names
    assert not [n for n in names if not n.endswith("-amd64") or "cloud" in n or "rt-" in n]


def test_parse_madison_captured() -> None:
    text = (DATA / "apt-madison-linux-source-6.1.txt").read_text()
    versions = deps.parse_madison(text)
    assert versions[0] == "6.1.192-2"
    assert "6.1.170-3" in versions
    assert len(versions) == len(set(versions)) == 6
    offers = apt.parse_offers((DATA / "apt-madison-linux-6.12.txt").read_text())
    image = [o for o in offers if o.package == "linux-image-6.12.117+deb12-amd64"]
    assert [(o.version, o.suite) for o in image] == [("6.12.117-1~deb12u1", "bookworm-security")]
    assert [o.version for o in offers if o.package == "linux-source-6.12"][-1] == (
        "6.12.107-1~deb12u1"
    )


def test_parse_madison_empty() -> None:
    assert deps.parse_madison("") == []


def _offered(name: str) -> dict[str, list[str]]:
    """package -> versions of a captured `apt-cache madison` output."""
    offered: dict[str, list[str]] = {}
    for offer in apt.parse_offers((DATA / name).read_text()):
        offered.setdefault(offer.package, []).append(offer.version)
    return offered


def test_a_pin_apt_still_has_is_not_gone() -> None:
    """Captured madison output of the day the 6.12 pin was added: all three packages."""
    pin = load_pins().get("6.12")
    assert deps.unavailable(pin.packages(), _offered("apt-madison-linux-6.12.txt")) == []
    old = load_pins().get("6.1")
    offered = _offered("apt-madison-linux-source-6.1.txt")
    assert deps.unavailable({old.source_pkg: old.version}, offered) == []


def test_a_gone_version_is_refused_in_one_line_with_what_apt_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pin moved to a version apt no longer serves (6.12.110, between uploads): one line that
    names what is gone, the images of the series and the source's versions apt has (captured
    output), and how to move the pin."""
    stale = REAL.replace("6.12.117", "6.12.110")
    pin = parse_pins(stale).get("6.12")
    offered = _offered("apt-madison-linux-6.12.txt")
    gone = deps.unavailable(pin.packages(), offered)
    assert gone == [
        "linux-image-6.12.110+deb12-amd64=6.12.110-1~deb12u1",
        "linux-headers-6.12.110+deb12-amd64=6.12.110-1~deb12u1",
        "linux-source-6.12=6.12.110-1~deb12u1",
    ]
    search = (DATA / "apt-search-linux-image-6.12.txt").read_text()
    images = apt.parse_search(search, re.compile("linux-image-" + pin.abi_pattern.pattern))
    monkeypatch.setattr(apt, "search_names", lambda pattern, prefix: images)
    monkeypatch.setattr(deps, "available_versions", lambda pkg: offered.get(pkg, []))
    msg = deps.gone_message(pin, gone)
    assert "\n" not in msg
    assert msg.startswith(
        "deps: kernel pin 6.12 (6.12.110+deb12-amd64 6.12.110-1~deb12u1) is gone from apt: "
        "linux-image-6.12.110+deb12-amd64=6.12.110-1~deb12u1 "
    )
    # newest first, four of them; versions apt has for each (captured: only 6.12.117's)
    assert "available: linux-image-6.12.117+deb12-amd64 6.12.117-1~deb12u1; " in msg
    assert "linux-image-6.12.111+deb12-amd64 ?;" in msg
    assert "linux-image-6.12.101+deb12-amd64" not in msg
    assert (
        "linux-source-6.12 6.12.117-1~deb12u1, 6.12.115-2~deb12u1, 6.12.113-1~deb12u1, "
        "6.12.111-1~deb12u1, 6.12.107-1~deb12u1; move pin 6.12 in " in msg
    )
    assert msg.endswith("to a version all three packages have, then `make deps PIN=6.12`")


def test_gone_with_nothing_to_offer() -> None:
    pin = load_pins().get("6.1")
    msg = deps.repin_message(pin, ["linux-source-6.1=6.1.192-2"], {}, [])
    assert "available: no linux-image-6.1.*-amd64 images; linux-source-6.1 none;" in msg
    assert msg.endswith("then `make deps`")


# ---- apt sources: bookworm-backports from bookworm's mirror ---------------------------------
def test_backports_line_from_the_deb822_sources() -> None:
    texts = [(DATA / "apt-debian.sources").read_text()]
    assert apt.mirror_of("bookworm", texts) == "http://mirror.invalid/debian"
    assert apt.mirror_of("bookworm-security", texts) == "http://mirror.invalid/debian-security"
    assert apt.mirror_of("bookworm-backports", texts) is None
    line = apt.suite_line("bookworm", "bookworm-backports", texts)
    assert line == "deb http://mirror.invalid/debian bookworm-backports main"
    # the line deps writes is read back as serving the suite (no second line next time)
    assert apt.mirror_of("bookworm-backports", [*texts, line]) == "http://mirror.invalid/debian"


def test_one_line_sources_and_no_mirror() -> None:
    text = "# deb http://x/old bookworm main\ndeb [arch=amd64] http://m/debian bookworm main\n"
    assert apt.mirror_of("bookworm", [text]) == "http://m/debian"
    with pytest.raises(apt.AptError, match="no apt source serves bookworm"):
        apt.suite_line("bookworm", "bookworm-backports", ["deb http://m/debian trixie main\n"])


# ---- QEMU: bookworm's or bookworm-backports' ----------------------------------------------
def test_qemu_choice_is_checked_on_dpkg_output() -> None:
    debian = apt.parse_installed((DATA / "dpkg-qemu-7.2.txt").read_text())
    assert debian["qemu-system-x86"] == ("1:7.2+dfsg-7+deb12u18+b3", "qemu")
    installed = {p: v for p, (v, _) in debian.items()}
    assert deps.qemu_ok(deps.qemu_choice("debian"), installed)
    assert not deps.qemu_ok(deps.qemu_choice("backports"), installed)
    # constructed (no machine here has run QEMU 10 from backports yet)
    version = deps.QEMU_CHOICES["backports"].version or ""
    bpo = {"qemu-system-x86": version, "qemu-system-common": version}
    assert bpo["qemu-system-x86"] == deps.QEMU_CHOICES["backports"].version
    assert deps.qemu_ok(deps.qemu_choice("backports"), bpo)
    assert not deps.qemu_ok(deps.qemu_choice("debian"), bpo)
    assert not deps.qemu_ok(deps.qemu_choice("debian"), {})
    with pytest.raises(deps.DepsError, match="QEMU=kvm: expected one of debian, backports"):
        deps.qemu_choice("kvm")


def test_qemu_version_gone_lists_what_apt_has(monkeypatch: pytest.MonkeyPatch) -> None:
    offers = apt.parse_offers((DATA / "apt-madison-qemu-backports.txt").read_text())
    assert {o.suite for o in offers} >= {"bookworm", "bookworm-backports"}
    monkeypatch.setattr(apt, "offers", lambda pkg: offers)
    backports = deps.qemu_choice("backports")
    assert deps.qemu_targets(backports, {}) == [
        "-t",
        "bookworm-backports",
        f"qemu-system-x86={backports.version}",
    ]
    gone = deps.QemuChoice("backports", "bookworm-backports", "1:10.0.0-1~bpo12+1", "x")
    with pytest.raises(deps.DepsError) as exc:
        deps.qemu_targets(gone, {})
    assert "1:10.0.0-1~bpo12+1 is not available from bookworm-backports" in str(exc.value)
    assert f"{backports.version} (bookworm-backports)" in str(exc.value)


def test_qemu_back_from_backports_downgrades_each_package(monkeypatch: pytest.MonkeyPatch) -> None:
    offers = apt.parse_offers((DATA / "apt-madison-qemu-backports.txt").read_text())
    monkeypatch.setattr(apt, "offers", lambda pkg: [o for o in offers if o.package == pkg])
    installed = {"qemu-system-x86": deps.QEMU_CHOICES["backports"].version or ""}
    targets = deps.qemu_targets(deps.qemu_choice("debian"), installed)
    assert targets[0] == "--allow-downgrades"
    assert targets[1].startswith("qemu-system-x86=1:7.2+dfsg-7+deb12u")
