"""Unit tests for the debug-kernel build helpers (no kernel build here)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from p2pkpvm.cli.main import main as cli_main
from p2pkpvm.kernel import kbuild
from p2pkpvm.kernel.pin import load_pins
from p2pkpvm.paths import project_root

_VALUE = r"(y|m|n|-?\d+|0x[0-9a-fA-F]+|\"[^\"]*\")"
FRAGMENT_LINE = re.compile(
    rf"^(|#(?!.*CONFIG_).*|CONFIG_[A-Z0-9_]+={_VALUE}|# CONFIG_[A-Z0-9_]+ is not set)$"
)


def test_parse_config_values_and_unset() -> None:
    text = (
        "# comment\n"
        "CONFIG_A=y\n"
        "CONFIG_B=m\n"
        '# CONFIG_C is not set\nCONFIG_D="x y"\nCONFIG_E=32000\n\n'
        "CONFIG_A=n\n"
    )
    assert kbuild.parse_config(text) == {
        "CONFIG_A": "n",
        "CONFIG_B": "m",
        "CONFIG_C": "n",
        "CONFIG_D": '"x y"',
        "CONFIG_E": "32000",
    }


def test_parse_config_ignores_prose_comments() -> None:
    assert kbuild.parse_config("# CONFIG_A is set somewhere\n# CONFIG_B=y\n") == {}


def test_mismatches_report_each_lost_option() -> None:
    requested = {"CONFIG_KASAN": "y", "CONFIG_DRM": "n", "CONFIG_POOL": "32000", "CONFIG_X": "y"}
    final = {"CONFIG_KASAN": "y", "CONFIG_DRM": "y", "CONFIG_POOL": "16000"}
    assert kbuild.config_mismatches(requested, final) == [
        "CONFIG_DRM: requested n, got y",
        "CONFIG_POOL: requested 32000, got 16000",
        "CONFIG_X: requested y, got not set",
    ]


def test_absent_option_satisfies_not_set() -> None:
    assert kbuild.config_mismatches({"CONFIG_GONE": "n"}, {}) == []
    assert kbuild.config_mismatches({"CONFIG_OFF": "n"}, {"CONFIG_OFF": "n"}) == []


def test_build_key_changes_with_every_input() -> None:
    base = kbuild.build_key("6.1.192-2", "BASE", [("a.config", "CONFIG_A=y\n")])
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    assert base == kbuild.build_key("6.1.192-2", "BASE", [("a.config", "CONFIG_A=y\n")])
    others = {
        kbuild.build_key("6.1.193-1", "BASE", [("a.config", "CONFIG_A=y\n")]),
        kbuild.build_key("6.1.192-2", "BASE2", [("a.config", "CONFIG_A=y\n")]),
        kbuild.build_key("6.1.192-2", "BASE", [("a.config", "CONFIG_A=n\n")]),
        kbuild.build_key("6.1.192-2", "BASE", [("b.config", "CONFIG_A=y\n")]),
        kbuild.build_key("6.1.192-2", "BASE", []),
    }
    assert base not in others
    assert len(others) == 5


def test_count_compiled_counts_cc_lines_only() -> None:
    log = "  CC      init/main.o\n  LD      vmlinux\n  CC [M]  fs/efivarfs/inode.o\n  AS  x.o\n"
    assert kbuild.count_compiled(log) == 2
    assert kbuild.count_compiled("") == 0


def test_build_paths_live_in_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("P2PKP_CACHE", str(tmp_path))
    kb = kbuild.KernelBuild(version="6.1.192-2", flavour="debug", key="0123456789abcdef")
    assert kb.source == tmp_path / "kernel" / "src-6.1.192-2"
    assert kb.directory == tmp_path / "kernel" / "build-6.1.192-2-debug-0123456789abcdef"
    assert kb.partial.name == kb.directory.name + ".partial"
    assert kb.bzimage == kb.directory / "arch/x86/boot/bzImage"
    assert not kb.complete()
    kb.partial.mkdir(parents=True)
    (kb.partial / kbuild.COMPLETE_STAMP).write_text("{}")
    assert not kb.complete(), "a partial build must never look complete"
    kb.partial.rename(kb.directory)
    assert kb.complete()


def test_new_config_starts_from_the_newest_complete_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("P2PKP_CACHE", str(tmp_path))

    def build(flavour: str, key: str, complete: bool, mtime: int) -> kbuild.KernelBuild:
        kb = kbuild.KernelBuild(version="6.1.192-2", flavour=flavour, key=key)
        d = kb.directory if complete else kb.partial
        d.mkdir(parents=True)
        (d / "vmlinux.o").write_text(key)
        if complete:
            (d / kbuild.COMPLETE_STAMP).write_text("{}")
            os.utime(d / kbuild.COMPLETE_STAMP, (mtime, mtime))
        return kb

    new = kbuild.KernelBuild(version="6.1.192-2", flavour="debug", key="new")
    assert kbuild.seed_for(new) is None
    build("debug", "old", True, 1000)
    newest = build("debug", "newer", True, 2000)
    build("debug", "broken", False, 3000)  # interrupted: never a seed
    build("other", "x", True, 4000)  # another flavour
    assert kbuild.seed_for(new) == newest.directory
    older = kbuild.seed_for(newest)
    assert older is not None and older.name.endswith("-old")
    kbuild.seed(newest.directory, new.partial)
    assert (new.partial / "vmlinux.o").read_text() == "newer"
    assert not (new.partial / kbuild.COMPLETE_STAMP).exists(), "a seeded copy looked complete"
    assert newest.complete(), "the seed itself must stay as it was"


def test_check_module_ready_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(kbuild.KbuildError, match=r"Module\.symvers"):
        kbuild.check_module_ready(tmp_path)
    for rel in kbuild.MODULE_BUILD_NEEDS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    kbuild.check_module_ready(tmp_path)


@pytest.mark.parametrize("flavour", sorted(kbuild.FLAVOURS))
def test_fragments_are_well_formed(flavour: str) -> None:
    """A malformed line would be silently ignored by kconfig and by the check."""
    for name, text in kbuild.read_fragments(flavour):
        for n, line in enumerate(text.splitlines(), 1):
            assert FRAGMENT_LINE.match(line.strip()), f"{name}:{n}: not an option line: {line!r}"
        assert kbuild.parse_config(text), f"{name} requests nothing"


def test_fragments_do_not_contradict_each_other() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for name, text in kbuild.read_fragments("debug"):
        for option, value in kbuild.parse_config(text).items():
            if option in seen:
                assert seen[option][1] == value, f"{option}: {seen[option][0]} vs {name}"
            seen[option] = (name, value)


def test_debug_flavour_reports_instead_of_panicking() -> None:
    opts: dict[str, str] = {}
    for _, text in kbuild.read_fragments("debug"):
        opts.update(kbuild.parse_config(text))
    for must in (
        "KASAN",
        "KASAN_GENERIC",
        "KASAN_INLINE",
        "UBSAN",
        "UBSAN_BOUNDS",
        "PROVE_LOCKING",
        "DEBUG_ATOMIC_SLEEP",
        "DEBUG_KMEMLEAK",
        "DETECT_HUNG_TASK",
        "SOFTLOCKUP_DETECTOR",
        "NET_SCH_NETEM",
        "IPV6",
        "MODULE_UNLOAD",
    ):
        assert opts.get(f"CONFIG_{must}") == "y", must
    for off in (
        "PANIC_ON_OOPS",
        "UBSAN_TRAP",
        "BOOTPARAM_HUNG_TASK_PANIC",
        "BOOTPARAM_SOFTLOCKUP_PANIC",
        "DEBUG_KMEMLEAK_DEFAULT_OFF",
    ):
        assert opts.get(f"CONFIG_{off}") == "n", off


# What the module asks the crypto API for, and the option each needs built into the guest
# kernels we build (the stock kernels have them). The debug kernel once lacked CONFIG_CRYPTO_HMAC:
# setsockopt(P2PKP_KEY) failed with ENOENT there and every keyed test with it.
CRYPTO_OPTIONS = {"sha256": "CONFIG_CRYPTO_SHA256", "hmac": "CONFIG_CRYPTO_HMAC"}


@pytest.mark.parametrize("flavour", ["guest", "debug"])
def test_built_kernels_have_the_crypto_the_module_allocates(flavour: str) -> None:
    source = (project_root() / "p2pkp.c").read_text()
    names = set(re.findall(r'crypto_alloc_\w+\("([^"]+)"', source))
    assert names, "p2pkp.c allocates no crypto transform: update this test"
    needed = {CRYPTO_OPTIONS[a] for n in names for a in re.findall(r"\w+", n)}
    config: dict[str, str] = {}
    for _, text in kbuild.read_fragments(flavour):
        config.update(kbuild.parse_config(text))
    assert {o: config.get(o) for o in sorted(needed)} == dict.fromkeys(sorted(needed), "y")


def test_unknown_flavour_is_an_error() -> None:
    with pytest.raises(kbuild.KbuildError, match="unknown kernel flavour 'nope'"):
        kbuild.read_fragments("nope")


def test_path_of_an_unbuilt_kernel_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("P2PKP_CACHE", str(tmp_path))
    assert cli_main(["kernel", "path"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, f"not one line: {err!r}"
    assert "not built" in err
    assert "make kernel" in err
    assert str(tmp_path) in err


def _make(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, P2PKP_CACHE=str(cache))
    # the default pin, whatever pin the make that runs these tests was given
    for name in ("KDIR", "KERNEL", "PIN", "P2PKP_PIN", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    return subprocess.run(
        ["make", "-s", "-n", *args],
        cwd=project_root(),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_make_kernel_debug_without_a_build_says_what_to_do(tmp_path: Path) -> None:
    proc = _make(["module", "KERNEL=debug"], tmp_path)
    assert "debug-kernel-not-built" in proc.stdout
    assert "run `make kernel`" in proc.stderr


def test_make_kernel_debug_uses_the_cached_tree(tmp_path: Path) -> None:
    pins = load_pins()
    kb = kbuild.plan("debug", pins.get(pins.default))
    fake = kbuild.KernelBuild(kb.version, kb.flavour, kb.key)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("P2PKP_CACHE", str(tmp_path))
        fake.directory.mkdir(parents=True)
        (fake.directory / kbuild.COMPLETE_STAMP).write_text("{}")
        expected = fake.directory
    proc = _make(["module", "KERNEL=debug"], tmp_path)
    assert f"-C {expected} M=" in proc.stdout, proc.stdout + proc.stderr


def test_make_rejects_an_unknown_kernel(tmp_path: Path) -> None:
    proc = _make(["module", "KERNEL=bogus"], tmp_path)
    assert proc.returncode != 0
    assert "KERNEL=bogus: expected stock, lean or debug" in proc.stderr
