"""Builds on a Docker engine that cannot see this machine's folders: DOCKER_HOST=ssh://... or tcp://...
(or a Docker context so set), or `--runtime volumes` on any engine.

crossboard's own build runs inside the board's toolchain image on that engine (crossboard/engine_agent.py),
as `--runtime host` does in CI jobs already inside the image, in two passes that keep a local build's
confinement: a fetch pass, with the network and the right to unpack kernel sources, that runs no build
code; then the build pass, with no network, the project and the sources read-only. Neither runs as
root. This project (board files, modules, apps, crossboard itself) is in a volume of its own, written
only by the sync; its kernel sources in a second, its kernel build folders and outputs in a third. The
project goes in and the outputs come back as archives, changed files only, so a build that changes
nothing moves almost nothing. The image is built on the engine from the same context as a local one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path, PurePosixPath

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.types import Mount

from ..artifacts.files import sha256_of, write_atomically
from ..artifacts.manifest import MANIFEST_NAME, PLAIN_PART, Manifest, earlier_manifest, manifest_problem
from ..board.load import LoadedBoard
from ..errors import FailedElsewhere, InfrastructureError, UserError
from ..locking import holding
from ..settings import Settings
from ..toolchain.image import ToolchainImage
from ..toolchain.runtime import IMAGE_INSIDE, OWNER_LABEL, RUNTIME_LABEL, owner_label
from .context import BuildOptions

AGENT_ROOT = "/crossboard"
STATE_DIR = f"{AGENT_ROOT}/state"  # the project's kernel build folders, work folders, out/ and a home
SOURCES_DIR = f"{STATE_DIR}/cache/sources"  # where the cache's sources are, as a local build has them
VOLUME_LABEL = "org.crossboard.volume"
BUILD_USER = "10000:10000"  # no one's on the engine: the build never runs as root there
BUNDLES = ".crossboard-inputs"  # devel bundles from outside the project, in the project volume
# Never sent: what builds make, tools' caches, history. A project without these is small.
LEFT_OUT = frozenset(
    {".git", "out", "target", "__pycache__", ".crossboard", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
)
STOP_SECONDS = 30  # how long an interrupted build on the engine gets to write its manifest
# What the engine's copy of the project holds, read from the files themselves (never from a record the
# engine keeps, which a build there could have changed): {path: fingerprint, or "not a file"}. Run with
# the image's python, not crossboard's far copy, which is what it checks.
FAR_FINGERPRINTS = r"""
import hashlib, json, os, stat, sys
root, found = sys.argv[1], {}
def walk(folder):
    for entry in os.scandir(folder):
        mode, name = entry.stat(follow_symlinks=False).st_mode, os.path.relpath(entry.path, root)
        if stat.S_ISDIR(mode):
            walk(entry.path)
        elif stat.S_ISREG(mode):
            with open(entry.path, "rb") as stream:
                found[name] = hashlib.file_digest(stream, "sha256").hexdigest() + (":x" if mode & 0o111 else ":-")
        else:
            found[name] = "not a file"
walk(root)
print(json.dumps(found))
"""


def project_files(root: Path) -> dict[str, Path]:
    """The project's files by their path relative to `root`: everything a build reads, none of what
    builds write."""
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in LEFT_OUT or part.endswith(".egg-info") for part in relative.parts):
            continue
        if path.is_file() and not path.is_symlink():
            files[str(relative)] = path
    return files


def fingerprint(path: Path) -> str:
    """What the far end must have for the file to count as sent: its content and whether it runs."""
    return f"{sha256_of(path)}:{'x' if path.stat().st_mode & 0o111 else '-'}"


def changes(local: dict[str, str], far: dict[str, str]) -> tuple[list[str], list[str]]:
    """(files to send, paths to remove first) to make the far end's project `local`: what it has and
    this project has not, and what is there as another thing than a file."""
    send = sorted(name for name, print_ in local.items() if far.get(name) != print_)
    remove = sorted(name for name, print_ in far.items() if name not in local or print_ == "not a file")
    return send, remove


def project_key(root: Path) -> str:
    """One key per project on this machine: two clones never share outputs, module copies or app targets."""
    return hashlib.sha256(f"{socket.gethostname()}:{root.resolve()}".encode()).hexdigest()[:12]


def volume_names(key: str) -> dict[str, str]:
    """A project's volumes on an engine, by what each holds; nothing is shared with another project."""
    return {role: f"crossboard-{role}-{key}" for role in ("project", "state", "sources")}


def _archive(members: dict[str, bytes | Path], owner: str = "0:0") -> bytes:
    """A tar of files (content, private to `owner`, or a path to read, modes kept)."""
    uid, gid = (int(part) for part in owner.split(":"))
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.uid, info.gid = uid, gid
            if isinstance(content, Path):
                info.size, info.mode, info.mtime = (
                    content.stat().st_size,
                    content.stat().st_mode & 0o777,
                    int(content.stat().st_mtime),
                )
                with content.open("rb") as stream:
                    tar.addfile(info, stream)
            else:
                info.size, info.mode, info.mtime = len(content), 0o600, int(time.time())
                tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


class Agent:
    """The two toolchain containers on the engine that a build runs in: `fetcher`, with the network and
    the kernel sources writable, and `builder`, with neither and the project read-only."""

    def __init__(self, client: docker.DockerClient, image: ToolchainImage, key: str):
        self.client, self.image = client, image
        self.project_dir = f"{AGENT_ROOT}/projects/{key}"
        # Nothing is shared with another project: what one project's build code could leave behind
        # (links the fetch pass would follow, say) reaches only its own volumes.
        self.volumes = volume_names(key)
        self.names = {role: f"crossboard-engine-{role}-{uuid.uuid4().hex[:12]}" for role in ("fetch", "build")}
        self.fetcher: Container | None = None
        self.builder: Container | None = None

    def start(self) -> Agent:
        for name in self.volumes.values():
            self.client.volumes.create(name, labels={VOLUME_LABEL: "crossboard"})
        # the project's files are root's (the sync's), so the build user cannot change them in either;
        # root's commands (the sync, one chown) run in the fetcher, whose passes run as the build user
        self.fetcher = self._container("fetch", network=True, read_only=frozenset(), root_commands=True)
        self.builder = self._container("build", network=False, read_only=frozenset({"project", "sources"}))
        # the engine makes a new volume's folder root's: the state and the sources become the build user's
        self.check(self.fetcher, ["chown", "-h", BUILD_USER, STATE_DIR, f"{STATE_DIR}/cache", SOURCES_DIR], "0:0")
        return self

    def _container(self, role: str, network: bool, read_only: frozenset[str], root_commands: bool = False) -> Container:
        mounts = {"project": (self.project_dir, self.volumes["project"]), "state": (STATE_DIR, self.volumes["state"])}
        mounts["sources"] = (SOURCES_DIR, self.volumes["sources"])  # inside the state's cache: mounted after it
        container = self.client.containers.create(
            self.image.ref,
            ["sleep", "infinity"],
            name=self.names[role],
            init=True,
            user="0:0" if root_commands else BUILD_USER,  # a root exec has capabilities only in a root container
            mounts=[Mount(target, volume, read_only=name in read_only) for name, (target, volume) in mounts.items()],
            environment={
                "CROSSBOARD_CACHE": f"{STATE_DIR}/cache",
                "CROSSBOARD_OUT": f"{STATE_DIR}/out",
                # each container's own: nothing the build pass writes is a home the fetch pass reads
                "HOME": "/tmp",
                IMAGE_INSIDE: f"{self.image.ref}@{self.image.id}",
                "PYTHONPATH": self.project_dir,
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONNOUSERSITE": "1",
            },
            labels={RUNTIME_LABEL: "engine", OWNER_LABEL: owner_label()},
            network_mode=None if network else "none",
            cap_drop=["ALL"],
            cap_add=["CHOWN"] if root_commands else None,  # all root's commands need; the build user has none
            security_opt=["no-new-privileges"],
            working_dir=self.project_dir,
        )
        container.start()
        return container

    def remove(self) -> None:
        """Both containers, by the names chosen before they were asked for: also one whose start failed."""
        for name in self.names.values():
            try:
                self.client.api.remove_container(name, force=True)
            except (NotFound, APIError):
                pass

    def read(self, path: str) -> bytes | None:
        """A file on the engine's side (the state or the project); None when it is not there."""
        assert self.builder is not None
        return _read(self.builder, path)

    def run(self, container: Container, argv: list[str], user: str = BUILD_USER, tty: bool = False) -> tuple[str, Iterator]:
        debug = {"CROSSBOARD_DEBUG": "1"} if os.environ.get("CROSSBOARD_DEBUG") else {}  # tracebacks there too
        exec_id = self.client.api.exec_create(container.id, argv, tty=tty, environment=debug, user=user)["Id"]
        return exec_id, self.client.api.exec_start(exec_id, stream=True, tty=tty)

    def check(self, container: Container, argv: list[str], user: str = BUILD_USER) -> bytes:
        """A short command's standard output; its failure is the engine's."""
        exec_id = self.client.api.exec_create(container.id, argv, user=user)["Id"]
        output, errors = self.client.api.exec_start(exec_id, demux=True)
        if self.exit_code(exec_id) != 0:
            shown = (errors or output or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise InfrastructureError(f"the Docker engine's {argv[0]} in the build's container failed: {shown[0]}")
        return output or b""

    def exit_code(self, exec_id: str) -> int | None:
        state = self.client.api.exec_inspect(exec_id)
        return None if state["Running"] else state["ExitCode"]

    def sync_project(self, files: dict[str, Path]) -> tuple[int, int]:
        """Make the engine's copy of the project this one, as read from its files: (files sent, removed)."""
        assert self.fetcher is not None
        # -I: isolated from the copy it checks (no module of the project's, no environment's, no user site)
        far = json.loads(self.check(self.fetcher, ["python3", "-I", "-c", FAR_FINGERPRINTS, self.project_dir], "0:0"))
        send, remove = changes({name: fingerprint(path) for name, path in files.items()}, far)
        if remove:
            self.check(self.fetcher, ["rm", "-rf", "--", *(f"{self.project_dir}/{name}" for name in remove)], "0:0")
        if send:
            self.fetcher.put_archive(self.project_dir, _archive({name: files[name] for name in send}))
        return len(send), len(remove)

    def fetch_outputs(self, build_name: str, out_dir: Path) -> int:
        """The board's outputs into out_dir: the logs, each artifact whose sha256 differs from the local
        file's, then the manifest (last: a manifest here always describes files that are here). Returns
        how many artifacts came. What the engine sends is checked as a local manifest is, and every file
        lands inside out_dir with the sha256 the manifest names, or nothing is written."""
        remote = f"{STATE_DIR}/out/{build_name}"
        manifest_bytes = self.read(f"{remote}/{MANIFEST_NAME}")
        if manifest_bytes is None:
            return 0
        manifest = self._checked_manifest(build_name, manifest_bytes)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._fetch_folder(f"{remote}/logs", out_dir / "logs")
        fetched = 0
        for artifact in manifest["artifacts"]:
            local = inside(out_dir, artifact["path"], f"the engine's build of {build_name}")
            if local.is_file() and sha256_of(local) == artifact["sha256"]:
                continue
            content = self.read(f"{remote}/{artifact['path']}")
            if content is None:
                raise InfrastructureError(f"the engine's build of {build_name} lists {artifact['path']}, which it does not have")
            if hashlib.sha256(content).hexdigest() != artifact["sha256"]:
                raise InfrastructureError(
                    f"the engine's build of {build_name} sent {artifact['path']} with another sha256 than its manifest's"
                )
            local.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(local, content)
            local.chmod(0o755 if artifact["kind"] == "app" else 0o644)
            fetched += 1
        manifest["out_dir"] = str(out_dir)
        write_atomically(out_dir / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
        return fetched

    @staticmethod
    def _checked_manifest(build_name: str, data: bytes) -> dict:
        try:
            manifest = json.loads(data)
        except ValueError as error:
            raise InfrastructureError(f"the engine's build of {build_name} sent a manifest that is not JSON ({error})") from None
        problem = manifest_problem(manifest)
        if problem:
            raise InfrastructureError(f"the engine's build of {build_name} sent a manifest crossboard did not write ({problem})")
        return manifest

    def _fetch_folder(self, remote: str, local: Path) -> None:
        """Replace `local` with the engine's folder, whole (logs: a few small files), each file through
        tarfile's `data` filter and inside `local`."""
        assert self.builder is not None
        try:
            stream, _ = self.builder.get_archive(remote)
        except NotFound:
            return
        top = Path(remote).name
        files: dict[Path, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            for member in tar.getmembers():
                try:
                    member = tarfile.data_filter(member, str(local))
                except tarfile.FilterError as error:
                    raise InfrastructureError(f"the engine sent {remote} with {member.name!r} in it ({error})") from None
                path = PurePosixPath(member.name)
                if member.isfile():
                    if path.parts[:1] != (top,):
                        raise InfrastructureError(f"the engine sent {remote} with {member.name!r} in it, outside {top}")
                    where = inside(local, str(path.relative_to(top)), f"the engine's {remote}")
                    files[where.relative_to(local)] = tar.extractfile(member).read()  # type: ignore[union-attr]
        local.mkdir(parents=True, exist_ok=True)
        for old in local.iterdir():
            if old.is_file() and old.relative_to(local) not in files:
                old.unlink()
        for name, content in files.items():
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            write_atomically(local / name, content)


def inside(folder: Path, relative: str, sender: str) -> Path:
    """`folder / relative` when it is a plain path that stays inside `folder` (links already there
    included); else an error naming who sent it."""
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or not parts or not all(PLAIN_PART.match(part) for part in parts):
        raise InfrastructureError(f"{sender} names {relative!r}, not a plain path inside {folder}")
    target = folder.joinpath(*parts)
    if not target.resolve().is_relative_to(folder.resolve()):
        raise InfrastructureError(f"{sender} names {relative!r}, which leads out of {folder}")
    return target


def _read(container: Container, path: str) -> bytes | None:
    try:
        stream, _ = container.get_archive(path)
    except NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        extracted = tar.extractfile(member) if member is not None else None
        return extracted.read() if extracted is not None else None


@contextmanager
def agent_on(client: docker.DockerClient, image: ToolchainImage, root: Path) -> Iterator[Agent]:
    agent = Agent(client, image, project_key(root))
    try:
        yield agent.start()
    except DockerException as error:
        raise InfrastructureError(f"the Docker engine failed during the build: {error}") from None
    finally:
        agent.remove()


def _bundle_input(board: LoadedBoard, project_dir: str) -> tuple[dict[str, Path], str | None]:
    """A devel bundle goes with the project, under BUNDLES wherever it is here (out/ is never sent):
    ({its name there: it}, the --kernel-source that names it on the engine's side)."""
    bundle = board.devel_bundle()
    if bundle is None:
        return {}, None
    name = f"{BUNDLES}/{bundle.name}"
    return {name: bundle}, f"devel:{project_dir}/{name}"


def build_on_engine(
    client: docker.DockerClient,
    url: str,
    board: LoadedBoard,
    settings: Settings,
    options: BuildOptions,
    kernel_source: str | None,
    toolchain: str | None,
    image: ToolchainImage,
) -> Manifest | None:
    """`board`: as loaded here (its file checked, its bundle found); the engine loads it again from the
    project sent. Returns the manifest as it now is in out/, None for a plan."""
    say = print if options.echo else (lambda *args, **kwargs: None)
    if board.spec.kernel.source.path is not None:
        raise UserError(
            f"{board.file.name}: kernel.source.path: {board.spec.kernel.source.path} is a folder of this machine, "
            f"which the Docker engine at {url} cannot see: use a debian, tarball, git or devel source there"
        )
    variant = board.with_toolchain(toolchain) if toolchain else board
    root = board.project_root
    with agent_on(client, image, root) as agent:
        bundle, bundle_source = _bundle_input(board, agent.project_dir)
        files = project_files(root) | bundle
        started = time.monotonic()
        sent, removed = agent.sync_project(files)
        say(
            f"==> [{board.name}] on the engine at {url}: {sent} changed files sent, {removed} removed "
            f"({time.monotonic() - started:.1f} s)",
            flush=True,
        )
        request: dict = {
            "board": board.name,
            "kernel_source": bundle_source or kernel_source,
            "toolchain": toolchain,
            "options": {**asdict(options), "only": sorted(options.only)},
        }
        out_dir = variant.out_dir(settings.out_dir)
        tty = options.echo and sys.stdout.isatty()
        # a plan runs nothing: the build container alone says it
        passes = [("all", agent.builder)] if options.dry_run else [("fetch", agent.fetcher), ("build", agent.builder)]
        try:
            for phase, container in passes:
                assert container is not None
                request["options"]["phase"] = phase
                code, result_file = _run_pass(agent, container, request, tty=tty, echo=options.echo)
                if code != 0:
                    break
        except KeyboardInterrupt:
            if not options.dry_run:
                with holding(out_dir, f"the output folder of {board.name}"):
                    agent.fetch_outputs(variant.build_name, out_dir)  # its manifest says it was interrupted
            raise
        if options.dry_run:
            _finished(container, code, result_file)
            return None
        started = time.monotonic()
        with holding(out_dir, f"the output folder of {board.name}"):  # as a local build of it holds it
            fetched = agent.fetch_outputs(variant.build_name, out_dir)
        say(
            f"==> [{board.name}] {fetched} changed artifacts fetched into {out_dir} ({time.monotonic() - started:.1f} s)",
            flush=True,
        )
        _finished(container, code, result_file)
    return earlier_manifest(out_dir, board.name)


def _run_pass(agent: Agent, container: Container, request: dict, tty: bool, echo: bool) -> tuple[int, str]:
    """One pass of the build on the engine, its output shown as it comes: (its exit code, the file its
    error is in). On Ctrl-C it is asked to stop (so its manifest says so) and waited for, a bounded time."""
    result_file = f"/tmp/crossboard-result-{uuid.uuid4().hex[:12]}.json"
    agent_pid, request_file = f"{result_file}.pid", f"{result_file}.request"
    # the request as a file the build user alone reads, not an argument: a kernel source URL's
    # credentials stay out of the engine's process list
    container.put_archive("/", _archive({request_file.lstrip("/"): json.dumps(request).encode()}, owner=BUILD_USER))
    argv = ["sh", "-c", f"echo $$ > {agent_pid}; exec python3 -s -m crossboard.engine_agent {request_file} {result_file}"]
    exec_id, stream = agent.run(container, argv, tty=tty)
    try:
        for chunk in stream:
            if echo:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
    except KeyboardInterrupt:
        _, stopping = agent.run(container, ["sh", "-c", f"kill -TERM $(cat {agent_pid})"])
        for _ in stopping:
            pass
        deadline = time.monotonic() + STOP_SECONDS
        while agent.exit_code(exec_id) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        raise
    code = agent.exit_code(exec_id)
    return (1 if code is None else code), result_file


def _finished(container: Container, code: int, result_file: str) -> None:
    if code == 0:
        return
    try:
        result = json.loads(_read(container, result_file) or b"{}")
    except (APIError, ValueError):
        result = {}
    # the build's code can write that file: its word is taken for the message, never for success
    told = result.get("code")
    exit_code = told if isinstance(told, int) and told != 0 else code
    raise FailedElsewhere(result.get("error") or f"the build on the engine ended with exit code {code}", exit_code)
