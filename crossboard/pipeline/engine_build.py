"""Builds on a Docker engine that cannot see this machine's folders: DOCKER_HOST=ssh://... or tcp://...
(or a Docker context so set), or `--runtime volumes` on any engine.

crossboard's own build runs inside the board's toolchain image on that engine (engine_agent.py), as
`--runtime host` does in CI jobs already inside the image. The kernel cache lives in a named volume
on the engine shared by every project; this project (board files, modules, apps, crossboard itself)
and its outputs in a volume of its own. The project goes in and the outputs come back as archives,
changed files only, so a build that changes nothing moves almost nothing. The image is built on the
engine from the same context as a local one.
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
CACHE_VOLUME = "crossboard-cache"  # sources, kernel build folders, work folders: shared by every project
VOLUME_LABEL = "org.crossboard.volume"
SYNC_INDEX = ".crossboard-sync.json"  # in the project volume: what each file sent was (its sha256)
BUNDLES = ".crossboard-inputs"  # devel bundles from outside the project, in the project volume
# Never sent: what builds make, tools' caches, history. A project without these is small.
LEFT_OUT = frozenset(
    {".git", "out", "target", "__pycache__", ".crossboard", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
)
STOP_SECONDS = 30  # how long an interrupted build on the engine gets to write its manifest


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


def changes(local: dict[str, str], sent: dict[str, str]) -> tuple[list[str], list[str]]:
    """(files to send, files to remove) to make the far end's project `local`."""
    return sorted(name for name, print_ in local.items() if sent.get(name) != print_), sorted(set(sent) - set(local))


def project_volume(root: Path) -> str:
    """One volume per project on this machine: two clones never share outputs, module copies or app targets."""
    return f"crossboard-project-{hashlib.sha256(f'{socket.gethostname()}:{root.resolve()}'.encode()).hexdigest()[:12]}"


def _archive(members: dict[str, bytes | Path]) -> bytes:
    """A tar of files (content or a path to read), owned by root, modes kept."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, Path):
                info.size, info.mode, info.mtime = (
                    content.stat().st_size,
                    content.stat().st_mode & 0o777,
                    int(content.stat().st_mtime),
                )
                with content.open("rb") as stream:
                    tar.addfile(info, stream)
            else:
                info.size, info.mode, info.mtime = len(content), 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


class Agent:
    """The toolchain container on the engine that the build runs in, with the two volumes."""

    def __init__(self, client: docker.DockerClient, image: ToolchainImage, project_dir: str, volume: str):
        self.client, self.image, self.project_dir, self.volume = client, image, project_dir, volume
        self.container: Container | None = None

    def start(self) -> Agent:
        for name in (CACHE_VOLUME, self.volume):
            self.client.volumes.create(name, labels={VOLUME_LABEL: "crossboard"})
        self.container = self.client.containers.create(
            self.image.ref,
            ["sleep", "infinity"],
            name=f"crossboard-engine-{uuid.uuid4().hex[:12]}",
            init=True,
            user="0:0",  # the volumes are the engine's and root's; the container can do nothing else as root
            mounts=[
                Mount(f"{AGENT_ROOT}/cache", CACHE_VOLUME),
                Mount(self.project_dir, self.volume),
            ],
            environment={
                "CROSSBOARD_CACHE": f"{AGENT_ROOT}/cache",
                "CROSSBOARD_OUT": f"{self.project_dir}/out",  # never sent, never removed by a sync
                IMAGE_INSIDE: f"{self.image.ref}@{self.image.id}",
                "PYTHONPATH": self.project_dir,
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            labels={RUNTIME_LABEL: "engine", OWNER_LABEL: owner_label()},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            working_dir=self.project_dir,
        )
        self.container.start()
        return self

    def remove(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except NotFound:
                pass

    def read(self, path: str) -> bytes | None:
        """A file on the engine's side; None when it is not there."""
        assert self.container is not None
        try:
            stream, _ = self.container.get_archive(path)
        except NotFound:
            return None
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member is not None else None
            return extracted.read() if extracted is not None else None

    def run(self, argv: list[str], tty: bool = False) -> tuple[str, Iterator[bytes]]:
        assert self.container is not None
        debug = {"CROSSBOARD_DEBUG": "1"} if os.environ.get("CROSSBOARD_DEBUG") else {}  # tracebacks there too
        exec_id = self.client.api.exec_create(self.container.id, argv, tty=tty, environment=debug)["Id"]
        return exec_id, self.client.api.exec_start(exec_id, stream=True, tty=tty)

    def exit_code(self, exec_id: str) -> int | None:
        state = self.client.api.exec_inspect(exec_id)
        return None if state["Running"] else state["ExitCode"]

    def sync_project(self, files: dict[str, Path]) -> tuple[int, int]:
        """Send what changed since the last build from this project; (files sent, files removed)."""
        assert self.container is not None
        index = f"{self.project_dir}/{SYNC_INDEX}"
        sent = json.loads(self.read(index) or b"{}")
        local = {name: fingerprint(path) for name, path in files.items()}
        send, remove = changes(local, sent)
        if remove:
            _, stream = self.run(["rm", "-f", "--", *(f"{self.project_dir}/{name}" for name in remove)])
            for _ in stream:
                pass
        # the index last, in the same archive: it never names a file that did not arrive
        members: dict[str, bytes | Path] = {name: files[name] for name in send}
        members[SYNC_INDEX] = json.dumps(local, indent=0, sort_keys=True).encode()
        self.container.put_archive(self.project_dir, _archive(members))
        return len(send), len(remove)

    def fetch_outputs(self, build_name: str, out_dir: Path) -> int:
        """The board's outputs into out_dir: the logs, each artifact whose sha256 differs from the local
        file's, then the manifest (last: a manifest here always describes files that are here). Returns
        how many artifacts came. What the engine sends is checked as a local manifest is, and every file
        lands inside out_dir with the sha256 the manifest names, or nothing is written."""
        remote = f"{self.project_dir}/out/{build_name}"
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
        assert self.container is not None
        try:
            stream, _ = self.container.get_archive(remote)
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


@contextmanager
def agent_on(client: docker.DockerClient, image: ToolchainImage, root: Path) -> Iterator[Agent]:
    volume = project_volume(root)
    agent = Agent(client, image, f"{AGENT_ROOT}/projects/{volume.removeprefix('crossboard-project-')}", volume)
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
        request = {
            "board": board.name,
            "kernel_source": bundle_source or kernel_source,
            "toolchain": toolchain,
            "options": {**asdict(options), "only": sorted(options.only)},
        }
        result_file = f"/tmp/crossboard-result-{uuid.uuid4().hex[:12]}.json"
        out_dir = settings.out_dir / variant.build_name
        try:
            code = _run_agent(agent, request, result_file, tty=options.echo and sys.stdout.isatty(), echo=options.echo)
        except KeyboardInterrupt:
            if not options.dry_run:
                with holding(out_dir, f"the output folder of {board.name}"):
                    agent.fetch_outputs(variant.build_name, out_dir)  # its manifest says it was interrupted
            raise
        if options.dry_run:
            _finished(agent, code, result_file)
            return None
        started = time.monotonic()
        with holding(out_dir, f"the output folder of {board.name}"):  # as a local build of it holds it
            fetched = agent.fetch_outputs(variant.build_name, out_dir)
        say(
            f"==> [{board.name}] {fetched} changed artifacts fetched into {out_dir} ({time.monotonic() - started:.1f} s)",
            flush=True,
        )
        _finished(agent, code, result_file)
    return earlier_manifest(out_dir, board.name)


def _run_agent(agent: Agent, request: dict, result_file: str, tty: bool, echo: bool) -> int:
    """The build on the engine, its output shown as it comes; on Ctrl-C it is asked to stop (so its
    manifest says so) and waited for, a bounded time."""
    agent_pid, request_file = f"{result_file}.pid", f"{result_file}.request"
    # the request as a file, not an argument: a kernel source URL's credentials stay out of the engine's process list
    assert agent.container is not None
    agent.container.put_archive("/", _archive({request_file.lstrip("/"): json.dumps(request).encode()}))
    argv = ["sh", "-c", f"echo $$ > {agent_pid}; exec python3 -m crossboard.pipeline.engine_agent {request_file} {result_file}"]
    exec_id, stream = agent.run(argv, tty=tty)
    try:
        for chunk in stream:
            if echo:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
    except KeyboardInterrupt:
        _, stopping = agent.run(["sh", "-c", f"kill -TERM $(cat {agent_pid})"])
        for _ in stopping:
            pass
        deadline = time.monotonic() + STOP_SECONDS
        while agent.exit_code(exec_id) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        raise
    code = agent.exit_code(exec_id)
    return 1 if code is None else code


def _finished(agent: Agent, code: int, result_file: str) -> None:
    if code == 0:
        return
    try:
        result = json.loads(agent.read(result_file) or b"{}")
    except (APIError, ValueError):
        result = {}
    raise FailedElsewhere(result.get("error") or f"the build on the engine ended with exit code {code}", result.get("code", code))
