"""The real, small projects the built-in agent tasks use: pinned here, fetched once into a cache.

Nothing is fetched while a benchmark runs (the sandboxes may have no network, and the local
ones have none). ``scripts/setup.sh`` runs ``python -m bench.workloads.fetch_agent_data``, which

* downloads each pinned file from PyPI with pip (the registry's own client, with this machine's
  pip configuration), one ``pip download --no-deps`` per file, and keeps it only when its
  sha256 is the one pinned below;
* builds the git bundle ``git_clone`` clones: a repository made from three released sdists of
  more-itertools (10.3.0, 10.4.0, 10.5.0), one commit each, every file with the content and
  executable bit its sdist gives it, author and committer ``sandbox-bench``, dated by the
  newest file in that sdist. The same sdists always give the same commit ids, so the bundle
  is checked by its head commit (:data:`BUNDLE_HEAD`), not by the bytes of its pack. It is not
  the project's own history: its upstream repository is on GitHub, which the setup may not
  reach; PyPI it may.

What it pins (pure Python, under MIT, BSD, Apache-2.0 and MPL-2.0 licences; 2.3 MB of wheels,
360 kB of sdists):

* ``pip_install``: pip 24.2 (run from its wheel, so every provider installs with the same pip)
  and requests 2.32.3 with its four dependencies (urllib3, idna, certifi, charset-normalizer),
  each as its ``py3-none-any`` wheel;
* ``build_test`` and ``git_clone``: the sdists of more-itertools (MIT), whose test suite runs
  with the standard library's unittest (817 tests in 10.5.0).

The cache is ``$SANDBOX_BENCH_CACHE``, else ``$XDG_CACHE_HOME/sandbox-bench``, else
``~/.cache/sandbox-bench``; the files live under its ``agent-tasks/`` folder. ``--check`` only
says what is missing. Exit codes: 0 done, 1 a download or build failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True, kw_only=True)
class Pinned:
    """One file from PyPI: the release, its file name and the sha256 PyPI publishes for it."""

    project: str
    version: str
    filename: str
    sha256: str
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


PIP = Pinned(
    project="pip",
    version="24.2",
    filename="pip-24.2-py3-none-any.whl",
    sha256="2cd581cf58ab7fcfca4ce8efa6dcacd0de5bf8d0a3eb9ec927e07405f4d9e2a2",
    licence="MIT",
)
#: ``pip install requests`` resolves exactly these from the uploaded folder.
REQUESTS_WHEELS: tuple[Pinned, ...] = (
    Pinned(
        project="requests",
        version="2.32.3",
        filename="requests-2.32.3-py3-none-any.whl",
        sha256="70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6",
        licence="Apache-2.0",
    ),
    Pinned(
        project="urllib3",
        version="2.2.3",
        filename="urllib3-2.2.3-py3-none-any.whl",
        sha256="ca899ca043dcb1bafa3e262d73aa25c465bfb49e0bd9dd5d59f1d0acba2f8fac",
        licence="MIT",
    ),
    Pinned(
        project="idna",
        version="3.10",
        filename="idna-3.10-py3-none-any.whl",
        sha256="946d195a0d259cbba61165e88e65941f16e9b36ea6ddb97f00452bae8b1287d3",
        licence="BSD-3-Clause",
    ),
    Pinned(
        project="certifi",
        version="2024.8.30",
        filename="certifi-2024.8.30-py3-none-any.whl",
        sha256="922820b53db7a7257ffbda3f597266d435245903d80737e34f8a45ff3e3230d8",
        licence="MPL-2.0",
    ),
    Pinned(
        project="charset-normalizer",
        version="3.4.0",
        filename="charset_normalizer-3.4.0-py3-none-any.whl",
        sha256="fe9f97feb71aa9896b81973a7bbada8c49501dc73e58a10fcef6663af95e5079",
        licence="MIT",
    ),
)
WHEELS: tuple[Pinned, ...] = (PIP, *REQUESTS_WHEELS)

#: The sdists the git history is made from, oldest first; the last is also build_test's.
HISTORY: tuple[Pinned, ...] = (
    Pinned(
        project="more-itertools",
        version="10.3.0",
        filename="more-itertools-10.3.0.tar.gz",
        sha256="e5d93ef411224fbcef366a6e8ddc4c5781bc6359d43412a65dd5964e46111463",
        licence="MIT",
    ),
    Pinned(
        project="more-itertools",
        version="10.4.0",
        filename="more-itertools-10.4.0.tar.gz",
        sha256="fe0e63c4ab068eac62410ab05cccca2dc71ec44ba8ef29916a0090df061cf923",
        licence="MIT",
    ),
    Pinned(
        project="more-itertools",
        version="10.5.0",
        filename="more-itertools-10.5.0.tar.gz",
        sha256="5482bfef7849c25dc3c6dd53a6173ae4795da2a41a80faea6700d9f5846c5da6",
        licence="MIT",
    ),
)
#: build_test's project.
SDIST = HISTORY[-1]
#: How many tests ``python3 -m unittest`` runs in SDIST's folder.
SDIST_TESTS = 817

BUNDLE_NAME = "more-itertools.bundle"
BUNDLE_BRANCH = "main"
#: The head commit of the bundle built from HISTORY (the same on every machine).
BUNDLE_HEAD = "40daeeb1dd9c5cc24e12cc664922a5efd66e05c3"
BUNDLE_COMMITS = len(HISTORY)
#: Committer of every commit (RFC 2606: .invalid never resolves).
_IDENTITY = ("sandbox-bench", "sandbox-bench@example.invalid")


class DataError(Exception):
    """A pinned file could not be fetched, was not what was pinned, or the bundle could not be
    built; the message is one line."""


def cache_dir() -> Path:
    """The folder holding the built-in tasks' files (see the module docstring)."""
    root = os.environ.get("SANDBOX_BENCH_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "sandbox-bench"
    return base / "agent-tasks"


def wheels_dir() -> Path:
    return cache_dir() / "wheels"


def sdists_dir() -> Path:
    return cache_dir() / "sdists"


def bundle_path() -> Path:
    return cache_dir() / "git" / BUNDLE_NAME


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pinned_path(pin: Pinned) -> Path:
    return (wheels_dir() if pin.is_wheel else sdists_dir()) / pin.filename


def _problem(pin: Pinned) -> str | None:
    path = _pinned_path(pin)
    if not path.is_file():
        return f"{pin.filename} is missing"
    found = sha256_file(path)
    if found != pin.sha256:
        return f"{pin.filename} has sha256 {found[:12]}..., pinned {pin.sha256[:12]}..."
    return None


def bundle_head(path: Path) -> str | None:
    """The commit the bundle's branch points at, read with ``git bundle list-heads``; None when
    git is absent or the file is not a bundle."""
    git = shutil.which("git")
    if git is None or not path.is_file():
        return None
    try:
        out = subprocess.run(
            [git, "bundle", "list-heads", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=_git_env(),
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        sha, _, ref = line.partition(" ")
        if ref == f"refs/heads/{BUNDLE_BRANCH}":
            return sha
    return None


def problems(*, wheels: bool = True, sdist: bool = True, bundle: bool = True) -> list[str]:
    """What is missing or wrong in the cache (empty: everything is there as pinned)."""
    found: list[str] = []
    pins = [*(WHEELS if wheels else ()), *((SDIST,) if sdist else ())]
    found += [p for p in map(_problem, pins) if p is not None]
    if bundle:
        path = bundle_path()
        if not path.is_file():
            found.append(f"{BUNDLE_NAME} is missing")
        else:
            head = bundle_head(path)
            if head != BUNDLE_HEAD:
                found.append(f"{BUNDLE_NAME} has head {head}, expected {BUNDLE_HEAD}")
    return found


# -- fetching -----------------------------------------------------------------------------------


def _pip_download(pin: Pinned, into: Path) -> None:
    """``pip download`` of exactly ``pin`` (no dependencies) into ``into``."""
    args = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(into)]
    if pin.is_wheel:
        # The pure-Python wheel whatever this machine is: the sandbox may be another platform.
        args += ["--only-binary=:all:", "--platform", "any", "--implementation", "py",
                 "--python-version", "3.8", "--abi", "none"]  # fmt: skip
    else:
        args += ["--no-binary=:all:"]
    args.append(pin.requirement)
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataError(f"pip download {pin.requirement} failed: {exc}") from None
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-2:])[-300:]
        raise DataError(f"pip download {pin.requirement} failed: {tail}")


def fetch_pinned(pin: Pinned, log: Callable[[str], None] = print) -> Path:
    """Download ``pin`` into the cache unless it is already there as pinned; its path."""
    path = _pinned_path(pin)
    if _problem(pin) is None:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"fetching {pin.requirement} ({pin.filename}) from PyPI")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        _pip_download(pin, Path(tmp))
        got = Path(tmp) / pin.filename
        if not got.is_file():
            names = ", ".join(sorted(p.name for p in Path(tmp).iterdir())) or "nothing"
            raise DataError(f"pip download {pin.requirement} gave {names}, not {pin.filename}")
        digest = sha256_file(got)
        if digest != pin.sha256:
            raise DataError(
                f"{pin.filename} from PyPI has sha256 {digest}, pinned {pin.sha256}; refused"
            )
        os.replace(got, path)
    return path


def _git_env() -> dict[str, str]:
    """git without this machine's or user's configuration (hooks, signing, autocrlf)."""
    name, email = _IDENTITY
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "LC_ALL": "C",
        "TZ": "UTC",
    }


def _members(archive: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, PurePosixPath]]:
    """Regular files of an sdist with their paths inside its top folder; anything that could
    write outside the destination is refused."""
    for member in archive.getmembers():
        if member.isdir():
            continue
        path = PurePosixPath(member.name)
        if not member.isfile() or path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
            raise DataError(f"unexpected member {member.name!r} in the sdist")
        yield member, PurePosixPath(*path.parts[1:])


def _unpack_sdist(sdist: Path, into: Path) -> int:
    """Write the sdist's files under ``into`` (its top folder stripped), each with the
    executable bit it has there (git keeps nothing else of the mode); the newest file's mtime."""
    # Hand-written rather than extractall(filter=...): the filter argument needs Python 3.11.4+.
    newest = 0
    with tarfile.open(sdist, "r:gz") as archive:
        for member, relative in _members(archive):
            target = into.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            if source is None:
                raise DataError(f"cannot read {member.name} in {sdist.name}")
            target.write_bytes(source.read())
            target.chmod(0o755 if member.mode & 0o100 else 0o644)
            newest = max(newest, int(member.mtime))
    return newest


def build_bundle(sdists: list[Path], out: Path) -> str:
    """A git bundle of one commit per sdist (oldest first) at ``out``; its head commit."""
    git = shutil.which("git")
    if git is None:
        raise DataError("git_clone's bundle needs git on this machine to be built")
    env = _git_env()

    def run(*args: str, cwd: Path, extra_env: dict[str, str] | None = None) -> str:
        try:
            done = subprocess.run(
                [git, *args], cwd=cwd, env={**env, **(extra_env or {})},
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise DataError(f"git {args[0]} failed: {exc}") from None
        if done.returncode != 0:
            raise DataError(f"git {args[0]} failed: {done.stderr.strip()[-300:]}")
        return done.stdout.strip()

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        settings = ["-c", "core.autocrlf=false", "-c", "core.fileMode=true",
                    "-c", "commit.gpgSign=false"]  # fmt: skip
        run("init", "--quiet", f"--initial-branch={BUNDLE_BRANCH}", str(repo), cwd=Path(tmp))
        for sdist, pin in zip(sdists, HISTORY, strict=True):
            for child in repo.iterdir():
                if child.name != ".git":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            newest = _unpack_sdist(sdist, repo)
            run(*settings, "add", "--all", "--force", ".", cwd=repo)
            date = f"{newest} +0000"
            message = f"{pin.project} {pin.version}, from its sdist on PyPI ({pin.filename})"
            dates = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
            run(*settings, "commit", "--quiet", "--no-verify", "-m", message, cwd=repo,
                extra_env=dates)  # fmt: skip
            run("tag", f"v{pin.version}", cwd=repo)
        head = run("rev-parse", "HEAD", cwd=repo)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".part")
        run("bundle", "create", "--quiet", str(partial), "--all", cwd=repo)
        os.replace(partial, out)
    return head


def fetch(log: Callable[[str], None] = print) -> None:
    """Everything the built-in tasks need, fetched or built unless already there as pinned."""
    for pin in WHEELS:
        fetch_pinned(pin, log)
    sdists = [fetch_pinned(pin, log) for pin in HISTORY]
    if bundle_head(bundle_path()) == BUNDLE_HEAD:
        return
    log(f"building {BUNDLE_NAME} from {', '.join(p.filename for p in HISTORY)}")
    head = build_bundle(sdists, bundle_path())
    if head != BUNDLE_HEAD:
        bundle_path().unlink(missing_ok=True)
        raise DataError(f"the bundle built here has head {head}, pinned {BUNDLE_HEAD}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workloads.fetch_agent_data",
        description="Fetch (from PyPI, with pip) and build the files of the built-in agent "
        "tasks into the cache.",
    )
    parser.add_argument("--check", action="store_true", help="only say what is missing")
    parser.add_argument("--quiet", action="store_true", help="say nothing when all is well")
    args = parser.parse_args(argv)
    if args.check:
        found = problems()
        for line in found:
            print(f"agent-tasks cache {cache_dir()}: {line}", file=sys.stderr)
        return 1 if found else 0
    try:
        fetch(log=(lambda _: None) if args.quiet else print)
    except DataError as exc:
        print(f"agent-tasks: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"agent-tasks: everything is in {cache_dir()}")
    return 0
