"""What dpkg and apt say (installed and available versions, sources), and adding a suite.

The parsers take the commands' text, so that the unit tests run them on captured output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from p2pkpvm.errors import HarnessError

SOURCES_DIR = Path("/etc/apt/sources.list.d")
SOURCES_LIST = Path("/etc/apt/sources.list")
APT_TIMEOUT_S = 1800.0  # apt-get install of a kernel: ~75 s; a slow mirror: minutes


class AptError(HarnessError):
    """apt or dpkg cannot do what deps needs; the message says what to do."""


@dataclass(frozen=True)
class Offer:
    """One line of `apt-cache madison`: a version of a package and where it comes from."""

    package: str
    version: str
    origin: str  # "http://deb.debian.org/debian bookworm-backports/main amd64 Packages"

    @property
    def suite(self) -> str:
        """'bookworm-backports' from the origin's 'bookworm-backports/main': the word after
        the archive's URI (which has slashes of its own)."""
        for word in self.origin.split()[1:]:
            if "/" in word:
                return word.split("/", 1)[0]
        return ""


def sudo() -> list[str]:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") is None:
        raise AptError("not root and no sudo: run `make deps` as root")
    return ["sudo", "-n"]


def _query(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AptError(f"`{' '.join(argv)}` failed: {exc}") from exc


def installed_version(pkg: str) -> str | None:
    """The installed version of a Debian package, or None."""
    out = _query(["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg])
    status, _, version = out.partition("\t")
    return version if status.endswith(" installed") and version else None


def parse_installed(text: str) -> dict[str, tuple[str, str]]:
    """`dpkg-query -W -f='${Package}\\t${Version}\\t${source:Package}\\t${Status}\\n'`:
    installed package -> (version, source package)."""
    found: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[3].endswith(" installed"):
            found[parts[0]] = (parts[1], parts[2])
    return found


def installed_of_source(source: str) -> dict[str, str]:
    """Installed binary packages built from one source package: name -> version."""
    text = _query(["dpkg-query", "-W", "-f=${Package}\t${Version}\t${source:Package}\t${Status}\n"])
    return {p: v for p, (v, s) in parse_installed(text).items() if s == source}


def parse_offers(text: str) -> list[Offer]:
    """`apt-cache madison PKG...` output (` pkg | version | origin`), in apt's order."""
    offers: list[Offer] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 3 and parts[0] and parts[1]:
            offers.append(Offer(parts[0], parts[1], parts[2]))
    return offers


def parse_madison(text: str) -> list[str]:
    """The versions of `apt-cache madison PKG` output, each once, in apt's order."""
    versions: list[str] = []
    for offer in parse_offers(text):
        if offer.version not in versions:
            versions.append(offer.version)
    return versions


def offers(pkg: str) -> list[Offer]:
    return parse_offers(_query(["apt-cache", "madison", pkg]))


def available_versions(pkg: str) -> list[str]:
    return parse_madison(_query(["apt-cache", "madison", pkg]))


def parse_search(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Package names of `apt-cache search --names-only` output that match `pattern` whole."""
    names = {line.split(" - ", 1)[0].strip() for line in text.splitlines()}
    return sorted(n for n in names if pattern.fullmatch(n))


def search_names(pattern: re.Pattern[str], prefix: str) -> list[str]:
    """Installable package names that start with `prefix` and match `pattern` whole."""
    out = _query(["apt-cache", "search", "--names-only", "^" + re.escape(prefix)])
    return parse_search(out, pattern)


# ---- sources ----------------------------------------------------------------------------
def parse_sources(text: str) -> list[tuple[str, list[str]]]:
    """(URI, suites) of each `deb` entry of a one-line sources.list or a deb822 .sources."""
    entries: list[tuple[str, list[str]]] = []
    if re.search(r"^Types:", text, re.MULTILINE):
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                entries += [(uri, fields.get("suites", "").split()) for uri in
                            fields.get("uris", "").split()]  # fmt: skip
        return entries
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    return entries


def mirror_of(suite: str, texts: list[str]) -> str | None:
    """The URI that serves `suite` in these sources texts (the first one)."""
    for text in texts:
        for uri, suites in parse_sources(text):
            if suite in suites:
                return uri
    return None


def sources_texts() -> list[str]:
    files = [
        SOURCES_LIST,
        *sorted(SOURCES_DIR.glob("*.list")),
        *sorted(SOURCES_DIR.glob("*.sources")),
    ]
    texts = []
    for f in files:
        try:
            texts.append(f.read_text())
        except OSError:
            continue
    return texts


def suite_line(base: str, suite: str, texts: list[str]) -> str:
    """`deb URI SUITE main` for a suite served by the same mirror as `base` (bookworm)."""
    uri = mirror_of(base, texts)
    if uri is None:
        raise AptError(
            f"no apt source serves {base} (in {SOURCES_LIST} or {SOURCES_DIR}): cannot tell "
            f"which mirror has {suite}"
        )
    return f"deb {uri} {suite} main"


def ensure_suite(base: str, suite: str, list_file: Path) -> bool:
    """Add `suite` (from base's mirror) to apt's sources unless some source has it already.
    True when a line was written (apt-get update is then needed)."""
    texts = sources_texts()
    if mirror_of(suite, texts) is not None:
        return False
    line = suite_line(base, suite, texts)
    print(f"deps: adding '{line}' to {list_file}", flush=True)
    run_root(["sh", "-c", f"echo '{line}' > {list_file}"], f"writing {list_file}")
    return True


def run_root(argv: list[str], what: str) -> None:
    """Run an apt/dpkg command as root (sudo when not root); AptError when it fails."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        proc = subprocess.run([*sudo(), *argv], env=env, check=False, timeout=APT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AptError(f"deps: {what}: {exc}") from exc
    if proc.returncode != 0:
        raise AptError(f"deps: {what}: `{' '.join(argv)}` failed with {proc.returncode}")
