"""Build the debug (or lean) guest kernel from a kernel pin's source, cached (`make kernel`).

Pipeline, all under `cache_dir()/kernel` (outside the work tree):

1. source: the pin's /usr/src/linux-source-X.Y.tar.xz, checked to be the pinned version
   (dpkg-query), extracted once into `src-<version>` (temp dir + rename);
2. config: `virtme-configkernel --defconfig` (the virtme base) in an out-of-tree
   build dir, then the fragments of the flavour appended and `make olddefconfig`;
   every option a fragment requests must survive, else the build stops with the
   list (as kunit does);
3. build: `nice -n 19 make -j$(nproc) bzImage modules` with a progress line every
   30 s; the build dir is `build-<version>-<flavour>-<key>.partial` until it is
   complete and then renamed, so an interrupted build never looks complete (and
   resumes incrementally next time).  The key hashes the base config request
   (virtme-configkernel --dry-run), the fragments and RECIPE.

The result is an O= build tree: `<dir>/arch/x86/boot/bzImage` boots with
`vng -r`, and `make -C <dir> M=<module dir> modules` builds a module for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from p2pkpvm.errors import HarnessError
from p2pkpvm.kernel.deps import cache_dir, installed_version
from p2pkpvm.kernel.pin import KernelPin, load_pin
from p2pkpvm.paths import project_root

# Bump when the build steps change in a way that changes the result.
RECIPE = "1: virtme-configkernel --defconfig + fragments, olddefconfig, bzImage modules"

FLAVOURS: dict[str, tuple[str, ...]] = {
    "debug": ("guest.config", "debug.config"),
    "guest": ("guest.config",),
}

COMPLETE_STAMP = ".p2pkp-complete"
BUILD_TARGETS = ("bzImage", "modules")
# What `make -C <dir> M=... modules` needs from the build tree.
MODULE_BUILD_NEEDS = (
    "Makefile",
    "Module.symvers",
    "include/generated/autoconf.h",
    "include/generated/utsrelease.h",
    "include/config/auto.conf",
    "scripts/mod/modpost",
    "scripts/basic/fixdep",
)

# Host tools and headers a kernel build needs (Debian: flex bison bc libelf-dev
# libssl-dev, besides gcc make perl from `make deps`).
BUILD_TOOLS = ("gcc", "make", "perl", "flex", "bison", "bc", "nice")
BUILD_HEADERS = ("/usr/include/libelf.h", "/usr/include/openssl/opensslv.h")

_SET_RE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET_RE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_CC_RE = re.compile(r"^\s+CC\s")


class KbuildError(HarnessError):
    """The kernel cannot be configured or built; the message says why and where."""


def parse_config(text: str) -> dict[str, str]:
    """Options of a .config or fragment: name -> value, 'n' for 'is not set'.

    Later lines win, as in Kconfig.  Other comments and blank lines are skipped.
    """
    options: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := _SET_RE.match(line):
            options[m.group(1)] = m.group(2)
        elif m := _UNSET_RE.match(line):
            options[m.group(1)] = "n"
    return options


def config_mismatches(requested: Mapping[str, str], final: Mapping[str, str]) -> list[str]:
    """Requested options whose final value differs, one readable line each.

    An option absent from the final config counts as 'n' (its dependencies are
    not met, or it does not exist in this source).
    """
    lines: list[str] = []
    for name, want in requested.items():
        got = final.get(name, "n")
        if got != want:
            shown = "not set" if name not in final else got
            lines.append(f"{name}: requested {want}, got {shown}")
    return lines


def build_key(version: str, base: str, fragments: Sequence[tuple[str, str]]) -> str:
    """Cache key of a build: pinned source version, base request, fragments, recipe."""
    h = hashlib.sha256()
    for part in (RECIPE, version, base, *(f"{n}\0{t}" for n, t in fragments)):
        h.update(part.encode())
        h.update(b"\0\0")
    return h.hexdigest()[:16]


def count_compiled(log_text: str) -> int:
    """Objects compiled so far according to a kbuild log (`  CC  path` lines)."""
    return sum(1 for line in log_text.splitlines() if _CC_RE.match(line))


def fragment_dir() -> Path:
    return project_root() / "configs" / "kconfig"


def kernel_cache() -> Path:
    return cache_dir() / "kernel"


@dataclass(frozen=True)
class KernelBuild:
    """Where one flavour of the pinned source is (or will be) built."""

    version: str
    flavour: str
    key: str

    @property
    def source(self) -> Path:
        return kernel_cache() / f"src-{self.version}"

    @property
    def directory(self) -> Path:
        return kernel_cache() / f"build-{self.version}-{self.flavour}-{self.key}"

    @property
    def partial(self) -> Path:
        return self.directory.with_name(self.directory.name + ".partial")

    @property
    def bzimage(self) -> Path:
        return self.directory / "arch" / "x86" / "boot" / "bzImage"

    def complete(self) -> bool:
        return (self.directory / COMPLETE_STAMP).is_file()


def _virtme_tool(name: str) -> str:
    exe = shutil.which(name)
    beside = Path(sys.executable).parent / name
    if exe is None and beside.is_file():
        exe = str(beside)
    if exe is None:
        raise KbuildError(f"{name} not on PATH: run `make venv` and use .venv/bin")
    return exe


def _virtme_configkernel() -> str:
    return _virtme_tool("virtme-configkernel")


VIRTME_MODS_DEP = ".virtme_mods/lib/modules/0.0.0/modules.dep"


def virtme_mods_ready(obj: Path) -> bool:
    """True when vng will not need to run virtme-prep-kdir-mods in obj.

    `vng -r <obj>/arch/x86/boot/bzImage` treats obj as a kernel build dir and
    (re)creates obj/.virtme_mods when modules.dep is missing or older than
    modules.order: done here once, so guests never write into the cache.
    """
    dep = obj / VIRTME_MODS_DEP
    order = obj / "modules.order"
    return dep.is_file() and (not order.exists() or dep.stat().st_mtime >= order.stat().st_mtime)


def prepare_virtme_mods(obj: Path) -> None:
    if virtme_mods_ready(obj):
        return
    log = obj / "p2pkp-virtme-mods.log"
    log.write_text("")
    _run([_virtme_tool("virtme-prep-kdir-mods")], obj, "virtme-prep-kdir-mods", log)


def base_request() -> str:
    """The options virtme-configkernel adds to defconfig (its --dry-run output)."""
    proc = subprocess.run(
        [_virtme_configkernel(), "--defconfig", "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise KbuildError(f"virtme-configkernel --dry-run failed: {proc.stderr.strip()}")
    return proc.stdout


def read_fragments(flavour: str) -> list[tuple[str, str]]:
    if flavour not in FLAVOURS:
        raise KbuildError(f"unknown kernel flavour '{flavour}' (known: {', '.join(FLAVOURS)})")
    out: list[tuple[str, str]] = []
    for name in FLAVOURS[flavour]:
        path = fragment_dir() / name
        try:
            out.append((name, path.read_text()))
        except OSError as exc:
            raise KbuildError(f"cannot read config fragment {path}: {exc.strerror}") from exc
    return out


def plan(flavour: str, pin: KernelPin | None = None) -> KernelBuild:
    pin = pin or load_pin()
    key = build_key(pin.version, base_request(), read_fragments(flavour))
    return KernelBuild(version=pin.version, flavour=flavour, key=key)


def check_source_version(pin: KernelPin) -> None:
    have = installed_version(pin.source_pkg)
    if have != pin.version:
        raise KbuildError(
            f"{pin.source_pkg} is at '{have or 'not installed'}', the pin says {pin.version}: "
            "run `make deps`"
        )
    if not pin.source_tarball.is_file():
        raise KbuildError(f"{pin.source_tarball} missing although {pin.source_pkg} is installed")


def missing_build_tools() -> list[str]:
    missing = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    missing.extend(h for h in BUILD_HEADERS if not Path(h).is_file())
    return missing


def check_build_tools() -> None:
    missing = missing_build_tools()
    if missing:
        raise KbuildError(
            f"kernel build needs {', '.join(missing)}: "
            "apt-get install flex bison bc libelf-dev libssl-dev (or `make deps`)"
        )


def ensure_source(pin: KernelPin, kb: KernelBuild) -> Path:
    """The extracted pinned source tree, extracting it once."""
    if (kb.source / "Makefile").is_file():
        return kb.source
    check_source_version(pin)
    tmp = kb.source.with_name(kb.source.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"kernel: extracting {pin.source_tarball} -> {kb.source}", flush=True)
    top = pin.source_tarball.name.removesuffix(".tar.xz")
    cmd = [
        "nice",
        "-n",
        "19",
        "tar",
        "-xJf",
        str(pin.source_tarball),
        "-C",
        str(tmp),
        "--strip-components=1",
        top,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise KbuildError(f"extracting {pin.source_tarball} failed: {proc.stderr.strip()}")
    if not (tmp / "Makefile").is_file():
        raise KbuildError(f"{pin.source_tarball} has no {top}/Makefile: not a kernel source")
    tmp.rename(kb.source)
    return kb.source


def _run(cmd: Sequence[str], cwd: Path, what: str, log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise KbuildError(f"{what} failed ({proc.returncode}):\n{_tail(log, 30)}")


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"  | {line}" for line in lines[-n:]) + f"\n  (full log: {path})"


def configure(src: Path, obj: Path, fragments: Sequence[tuple[str, str]]) -> None:
    """virtme base + fragments + olddefconfig in obj; stop if a request did not survive."""
    obj.mkdir(parents=True, exist_ok=True)
    log = obj / "p2pkp-config.log"
    log.write_text("")
    config = obj / ".config"
    config.unlink(missing_ok=True)
    _run(
        [_virtme_configkernel(), "--defconfig", f"O={obj}"],
        src,
        "virtme-configkernel --defconfig",
        log,
    )
    with config.open("a") as out:
        for name, text in fragments:
            out.write(f"\n# ---- p2pkp {name} ----\n{text}\n")
    _run(["make", f"O={obj}", "olddefconfig"], src, "make olddefconfig", log)
    requested: dict[str, str] = {}
    for _, text in fragments:
        requested.update(parse_config(text))
    bad = config_mismatches(requested, parse_config(config.read_text()))
    if bad:
        names = ", ".join(n for n, _ in fragments)
        raise KbuildError(
            f"kernel config: {len(bad)} option(s) requested by {names} did not survive "
            f"olddefconfig in {config}:\n" + "\n".join(f"  {line}" for line in bad)
        )


def _progress(log: Path, start: float, done: threading.Event, out: TextIO, every: float) -> None:
    while not done.wait(every):
        try:
            compiled = count_compiled(log.read_text(errors="replace"))
        except OSError:
            compiled = 0
        mins, secs = divmod(int(time.monotonic() - start), 60)
        print(f"kernel: {mins}m{secs:02d}s, {compiled} objects compiled", file=out, flush=True)


def compile_tree(src: Path, obj: Path, jobs: int, every: float = 30.0) -> float:
    """nice -n 19 make -jN bzImage modules; returns the wall time in seconds."""
    log = obj / "p2pkp-build.log"
    cmd = ["nice", "-n", "19", "make", f"O={obj}", f"-j{jobs}", *BUILD_TARGETS]
    print(f"kernel: building in {obj} ({' '.join(cmd)}), log {log}", flush=True)
    start = time.monotonic()
    done = threading.Event()
    thread = threading.Thread(
        target=_progress, args=(log, start, done, sys.stdout, every), daemon=True
    )
    log.write_text("")
    thread.start()
    try:
        _run(cmd, src, "kernel build", log)
    finally:
        done.set()
        thread.join()
    return time.monotonic() - start


def seed_for(kb: KernelBuild) -> Path | None:
    """The newest complete build of the same version and flavour under another config key.

    A new config starts from a copy of it: kbuild tracks which objects depend on which
    option, so `make` then rebuilds only what the changed options touch (minutes, not the
    12-20 of a build from scratch on 2 cores)."""
    found = [
        p
        for p in kernel_cache().glob(f"build-{kb.version}-{kb.flavour}-*")
        if p != kb.directory and (p / COMPLETE_STAMP).is_file()
    ]
    return max(found, key=lambda p: (p / COMPLETE_STAMP).stat().st_mtime, default=None)


def seed(src: Path, dst: Path) -> None:
    """Copy build tree src to dst (not yet there) as the start of an incremental build."""
    print(
        f"kernel: starting from {src.name}: only what the config change touches is rebuilt",
        flush=True,
    )
    subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dst)], check=True)
    (dst / COMPLETE_STAMP).unlink(missing_ok=True)


def check_module_ready(obj: Path) -> None:
    missing = [p for p in MODULE_BUILD_NEEDS if not (obj / p).exists()]
    if missing:
        raise KbuildError(f"build tree {obj} lacks {', '.join(missing)}: not usable for M= builds")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"kernel: waiting for another build ({path})", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def build(
    flavour: str = "debug", jobs: int | None = None, pin: KernelPin | None = None
) -> KernelBuild:
    """Build (or find in the cache) a flavour of a pin's kernel (default: the default pin)."""
    pin = pin or load_pin()
    kb = plan(flavour, pin)
    if kb.complete() and virtme_mods_ready(kb.directory):
        print(f"kernel: cached {kb.directory}", flush=True)
        return kb
    with _locked(kernel_cache() / ".lock"):
        if kb.complete():
            prepare_virtme_mods(kb.directory)
            print(f"kernel: cached {kb.directory}", flush=True)
            return kb
        check_source_version(pin)
        check_build_tools()
        src = ensure_source(pin, kb)
        start = time.monotonic()
        previous = seed_for(kb)
        if previous is not None and not kb.partial.exists():
            seed(previous, kb.partial)
        configure(src, kb.partial, read_fragments(flavour))
        seconds = compile_tree(src, kb.partial, jobs or os.cpu_count() or 1)
        check_module_ready(kb.partial)
        prepare_virtme_mods(kb.partial)
        info = {
            "version": pin.version,
            "flavour": flavour,
            "key": kb.key,
            "build_seconds": round(seconds, 1),
            "total_seconds": round(time.monotonic() - start, 1),
            "bzimage_bytes": (kb.partial / "arch/x86/boot/bzImage").stat().st_size,
        }
        (kb.partial / COMPLETE_STAMP).write_text(json.dumps(info, indent=1) + "\n")
        shutil.rmtree(kb.directory, ignore_errors=True)
        kb.partial.rename(kb.directory)
    print(f"kernel: built {kb.directory} in {info['total_seconds']} s", flush=True)
    return kb
