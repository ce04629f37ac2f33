"""The kernel source: obtained once as the board says, unpacked into a cache keyed by what it is,
and never modified afterwards (every build writes to O=)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import lzma
import re
import shutil
import subprocess
import tarfile
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..artifacts.files import sha256_of
from ..board.load import LoadedBoard
from ..board.schema import Git, KernelSource, Tarball
from ..errors import InfrastructureError, StepFailed, UserError
from ..locking import holding
from ..toolchain.image import packages_label
from ..toolchain.profiles import locked_version
from ..toolchain.runtime import Runtime
from ..toolchain.stream import Tee


@dataclass(frozen=True)
class SourcePlan:
    """Where the tree will be: `mount` is the host folder mounted as "sources", `key` the tree inside it."""

    mount: Path
    key: str  # "" when the mount is the tree itself (a local path)
    bundle: Path | None = None  # a devel bundle's tarball, made absolute

    def tree_in(self, runtime: Runtime) -> str:
        return f"{runtime.path('sources')}/{self.key}" if self.key else runtime.path("sources")

    @property
    def tree_on_host(self) -> Path:
        return self.mount / self.key if self.key else self.mount

    @property
    def unpacked(self) -> bool:
        """Whether the tree is there (its top-level Makefile, the last thing an unpack puts in place)."""
        return self.tree_on_host.joinpath("Makefile").is_file()


def redacted(url: str) -> str:
    """The URL as logs, plans and messages show it: a password or token in it (`user:pw@`, a query's
    values: `?private_token=`, `X-Amz-Signature=`) is written nowhere."""
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        user, host = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else f"***@{host}")
    if parts.query:
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        parts = parts._replace(query="&".join(f"{key}=***" for key, _ in query) or "***")
    return urllib.parse.urlunsplit(parts)


def plan_source(board: LoadedBoard, cache_dir: Path, image: dict | None = None) -> SourcePlan:
    """A Debian package's tree is keyed by its version in the toolchain `image` (the manifest's record
    of it: what it really holds), else in the profile's lock: profiles that hold the same one share it;
    a devel bundle's by its sha256."""
    source, sources = board.spec.kernel.source, cache_dir / "sources"
    if source.path is not None:
        return SourcePlan(mount=Path(source.path).expanduser().resolve(), key="")
    if bundle := board.devel_bundle():
        return SourcePlan(mount=sources, key=f"devel_{sha256_once(bundle)[:16]}", bundle=bundle)
    if source.debian is not None:
        held = packages_label((image or {}).get("packages", ""))
        version = held.get(source.debian) or locked_version(board.profile.lock(), source.debian) or "unlocked"
        return SourcePlan(mount=sources, key=f"{source.debian}_{version}".replace(":", "_"))
    if source.tarball is not None:
        return SourcePlan(mount=sources, key=f"tarball_{source.tarball.sha256[:16]}")
    git = _git(source)
    identity = hashlib.sha256(f"{git.url}\0{git.ref}".encode()).hexdigest()[:16]
    return SourcePlan(mount=sources, key=f"git_{identity}")


@functools.lru_cache(maxsize=8)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    return sha256_of(path)


def sha256_once(path: Path) -> str:
    """A file's sha256, hashed again only when the file changed (a build plans its source several times)."""
    try:
        status = path.stat()
    except OSError as error:
        raise UserError(f"kernel.source.devel: {path}: {error.strerror}") from None
    return _file_sha256(path, status.st_size, status.st_mtime_ns)


def _git(source: KernelSource) -> Git:
    """The git source, the one kind left when the others are not given (the schema wants exactly one)."""
    assert source.git is not None
    return source.git


def tree_version(tree: Path) -> tuple[int, ...] | None:
    """VERSION.PATCHLEVEL.SUBLEVEL from a kernel tree's Makefile, None when there is no tree yet."""
    makefile = tree / "Makefile"
    if not makefile.is_file():
        return None
    values = dict(line.split(" = ", 1) for line in makefile.read_text().splitlines()[:8] if " = " in line)
    # the leading digits: a tree's Makefile may say `PATCHLEVEL = 12-rc`
    return tuple(int(re.match(r"\s*(\d*)", values.get(key, ""))[1] or 0) for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))  # type: ignore[index]


def describe(source: KernelSource, plan: SourcePlan) -> list[str]:
    if plan.unpacked:
        return [f"kernel source ready at {plan.tree_on_host}"]
    if source.debian is not None:
        return [f"unpack /usr/src/{source.debian}.tar.xz (Debian package {source.debian}) into {plan.tree_on_host}"]
    if source.tarball is not None:
        return [f"download {redacted(source.tarball.url)}, check sha256 {source.tarball.sha256}, unpack into {plan.tree_on_host}"]
    if source.devel is not None:
        return [f"unpack the devel bundle {source.devel} into {plan.tree_on_host}"]
    if source.git is not None:
        return [f"git clone --depth 1 --branch {source.git.ref} {redacted(source.git.url)} {plan.tree_on_host}"]
    return [f"use the kernel tree at {plan.tree_on_host}"]


def obtain(source: KernelSource, plan: SourcePlan, runtime: Runtime, tee: Tee) -> bool:
    """Make the tree exist; False when it already did."""
    tree = plan.tree_on_host
    if plan.unpacked:
        return False
    if source.kind == "path":
        raise UserError(f"kernel.source.path: {tree} is not a kernel tree (no Makefile)")
    plan.mount.mkdir(parents=True, exist_ok=True)
    with holding(tree, "the kernel source being unpacked", tee.line):
        if plan.unpacked:  # by the build that held the lock
            return False
        _unpack(source, plan, runtime, tee)
    return True


def _unpack(source: KernelSource, plan: SourcePlan, runtime: Runtime, tee: Tee) -> None:
    tree = plan.tree_on_host
    partial = plan.mount / f".partial-{plan.key}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        if source.debian is not None:
            _unpack_debian(source.debian, plan, runtime, tee)
        elif source.tarball is not None:
            _unpack_tarball(source.tarball, plan.mount, partial, tee)
        elif plan.bundle is not None:
            _extract(plan.bundle, partial, "kernel.source.devel", str(plan.bundle))
        else:
            _clone(_git(source), partial, tee)
        if not partial.joinpath("Makefile").is_file():
            tops = [p for p in partial.iterdir() if p.is_dir()]
            if len(tops) != 1 or not tops[0].joinpath("Makefile").is_file():
                raise UserError(f"kernel.source: {source.kind} holds no kernel tree (no top-level Makefile)")
            tops[0].rename(tree)
        else:
            partial.rename(tree)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _unpack_debian(package: str, plan: SourcePlan, runtime: Runtime, tee: Tee) -> None:
    tarball = f"/usr/src/{package}.tar.xz"
    partial = f"{runtime.path('sources')}/.partial-{plan.key}"
    script = (
        f'test -f {tarball} || {{ echo "{tarball}: not in the toolchain"; exit 3; }}; '
        f"mkdir -p {partial} && tar -xf {tarball} -C {partial}"
    )
    with runtime.widened(writable=frozenset({"sources"})) as unpacker:  # the one step that writes the sources
        code = unpacker.run(["sh", "-c", script], tee)
    if code == 3:
        raise UserError(f"kernel.source.debian: {package} is not in the toolchain image: name it in its profile's packages.txt")
    if code != 0:
        raise StepFailed(f"unpacking {tarball} failed with exit code {code} (log: {tee.log_path})")


def _unpack_tarball(tarball: Tarball, mount: Path, partial: Path, tee: Tee) -> None:
    expected = tarball.sha256
    download = mount / f".download-{expected[:16]}"
    tee.line(f"downloading {redacted(tarball.url)}")
    try:
        try:
            with urllib.request.urlopen(tarball.url, timeout=60) as response, open(download, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except OSError as error:
            raise InfrastructureError(f"kernel.source.tarball: cannot fetch {redacted(tarball.url)}: {error}") from None
        actual = sha256_of(download)
        if actual != expected:
            raise UserError(
                f"kernel.source.tarball.sha256: {redacted(tarball.url)} has sha256 {actual}, "
                f"the board file says {expected}; nothing was unpacked"
            )
        _extract(download, partial, "kernel.source.tarball", redacted(tarball.url))
    finally:
        download.unlink(missing_ok=True)


UNPACKED_LIMIT = 8 << 30  # bytes a kernel tree or bundle may unpack to (a defconfig tree is about 1.5 GiB)


def _extract(archive_file: Path, partial: Path, key: str, shown: str) -> None:
    """Unpack through tarfile's `data` filter, within UNPACKED_LIMIT, and read to the archive's very end,
    so a damaged compressed stream (its CRC) is found and nothing of it is kept."""
    partial.mkdir()
    try:
        with tarfile.open(archive_file) as archive:
            unpacked = sum(member.size for member in archive.getmembers())
            if unpacked > UNPACKED_LIMIT:
                raise UserError(
                    f"{key}: {shown} unpacks to {unpacked >> 20} MiB, over the {UNPACKED_LIMIT >> 30} GiB a kernel tree takes"
                )
            archive.extractall(partial, filter="data")
            while archive.fileobj.read(1 << 20):  # the rest of the stream: gzip checks its CRC at the end
                pass
    except tarfile.ReadError:
        raise UserError(f"{key}: {shown}: not a readable tar archive; nothing was kept") from None
    except (
        tarfile.TarError,
        EOFError,
        zlib.error,
        gzip.BadGzipFile,
        lzma.LZMAError,
    ) as error:  # a member outside the tree, a link out of it, a cut or damaged archive
        raise UserError(f"{key}: {shown}: {' '.join(str(error).split())}; nothing was kept") from None
    except OSError as error:  # a member that cannot be made: a file `x` and a file `x/y`, say
        raise UserError(f"{key}: {shown}: {error.strerror or error} ({error.filename}); nothing was kept") from None


def _clone(git: Git, partial: Path, tee: Tee) -> None:
    if shutil.which("git") is None:
        raise InfrastructureError("kernel.source.git needs git on the host: apt-get install git")
    process = subprocess.run(
        ["git", "clone", "--depth", "1", "--branch", git.ref, git.url, str(partial)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    tee.write(process.stdout)
    if process.returncode != 0:
        raise InfrastructureError(f"kernel.source.git: cloning {redacted(git.url)} at {git.ref} failed (log: {tee.log_path})")
