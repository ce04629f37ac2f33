"""One interface to run build steps, inside the toolchain container or directly on the host.

Steps ask the runtime where a folder is (`runtime.path("build")`) and run argv lists; they never
know which runtime they have. The docker runtime mounts each folder at a fixed absolute path, so
Rust's path-dependent crate hashes match between a kernel build and a later module build.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container

from ..errors import InfrastructureError, StepFailed
from .stream import Tee

CONTAINER_ROOT = "/crossboard"
# Folders a build writes; the others (the kernel sources, the project) are mounted read-only.
WRITABLE = frozenset({"build", "work", "out"})
RUNTIME_LABEL = "org.crossboard.runtime"
OWNER_LABEL = "org.crossboard.owner"  # host:pid of the crossboard process that started the container
CREATION_SETTLE_TRIES = 40  # a quarter second apart: how long stop() waits for a container being created


class Runtime(ABC):
    """Runs commands with named folders (source, build, out, ...) mounted where steps expect them."""

    name: str

    def __init__(self, folders: dict[str, Path]):
        self.folders = dict(folders)

    @abstractmethod
    def path(self, folder: str) -> str:
        """Where the named folder is, as the commands run by this runtime see it."""

    def toolchain(self) -> dict[str, str]:
        """The toolchain image's ref and id, for the manifest; empty when the tools are the host's, which
        may change unseen (so nothing built with them is ever taken as unchanged)."""
        return {}

    @abstractmethod
    def run(self, argv: list[str], tee: Tee, env: dict[str, str] | None = None, cwd: str | None = None) -> int:
        """Run argv, streaming its output into `tee`; return its exit code."""

    def stop(self) -> None:  # noqa: B027 (a runtime with nothing to stop needs no override)
        pass

    def widened(self, writable: frozenset[str] = frozenset(), network: bool = False) -> Runtime:
        """The same folders, with `writable` ones writable and, with `network`, the network: for the
        few commands that need more than a build does (use it in a `with`). The host has it all."""
        return self

    def check(self, argv: list[str], tee: Tee, what: str, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        code = self.run(argv, tee, env=env, cwd=cwd)
        if code != 0:
            where = f" (log: {tee.log_path})" if tee.log_path else ""
            raise StepFailed(f"{what} failed with exit code {code}{where}")

    def output(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> tuple[int, str]:
        """Exit code and output (stdout and stderr) of a short command, not shown on the terminal."""
        tee = Tee(echo=False, tail_bytes=1 << 20)
        code = self.run(argv, tee, env=env, cwd=cwd)
        return code, tee.tail.decode(errors="replace")

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class HostRuntime(Runtime):
    """The same steps run directly, for CI jobs that already run inside the toolchain image."""

    name = "host"

    def __init__(self, folders: dict[str, Path], image: dict[str, str] | None = None):
        super().__init__(folders)
        self.image = image or {}

    def path(self, folder: str) -> str:
        return str(self.folders[folder])

    def toolchain(self) -> dict[str, str]:
        """Known when crossboard runs inside the toolchain image and was told which (a build on a
        remote engine): then what it built is reused as a docker build's is."""
        return dict(self.image)

    def run(self, argv, tee, env=None, cwd=None) -> int:
        try:
            process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, **(env or {})}
            )
        except FileNotFoundError:
            tee.write(f"{argv[0]}: command not found\n".encode())
            return 127
        stdout = process.stdout
        assert stdout is not None  # stdout=PIPE
        try:
            for chunk in iter(lambda: stdout.read1(65536), b""):  # type: ignore[attr-defined]
                tee.write(chunk)
            return process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


class DockerRuntime(Runtime):
    """A long-lived toolchain container per build, each command one exec, as the caller's uid:gid."""

    name = "docker"

    def __init__(
        self,
        client: docker.DockerClient | None,
        image: str,
        folders: dict[str, Path],
        label: str = "build",
        user: str | None = None,
        writable: frozenset[str] = WRITABLE,
        network: bool = False,
    ):
        super().__init__(folders)
        self.client = client
        self.image = image
        self.label = label
        self.user = user or f"{os.getuid()}:{os.getgid()}"
        self.writable = writable
        self.network = network
        self.container: Container | None = None
        self.container_name: str | None = None  # chosen before it is asked for, so stop() finds it in any case
        self.creating = False  # the engine was asked to create it and has not answered yet

    def widened(self, writable: frozenset[str] = frozenset(), network: bool = False) -> DockerRuntime:
        return DockerRuntime(
            self.client, self.image, self.folders, self.label, self.user, self.writable | writable, self.network or network
        )

    def path(self, folder: str) -> str:
        if folder not in self.folders:
            raise KeyError(folder)
        return f"{CONTAINER_ROOT}/{folder}"

    def engine(self) -> docker.DockerClient:
        """The engine; a runtime made for a plan where none runs has none."""
        if self.client is None:
            raise InfrastructureError(f"no Docker engine to run the image {self.image} with")
        return self.client

    def toolchain(self) -> dict[str, str]:
        try:
            image = self.engine().images.get(self.image)
        except DockerException as error:
            raise InfrastructureError(f"the Docker engine cannot show the image {self.image}: {error}") from None
        # the versions it really holds, and those that moved from the profile's lock
        labels = {key: image.labels.get(f"org.crossboard.{key}", "") for key in ("packages", "moved")}
        return {"ref": self.image, "id": image.id} | {key: value for key, value in labels.items() if value}

    def _start_container(self) -> Container:
        """On the first command, not on entering: a build whose steps all find their inputs unchanged
        starts no container."""
        remove_orphans(self.engine())
        for host_path in self.folders.values():
            host_path.mkdir(parents=True, exist_ok=True)
        volumes = {
            str(host): {"bind": self.path(name), "mode": "rw" if name in self.writable else "ro"}
            for name, host in self.folders.items()
        }
        try:
            # What build code can reach is only what the build writes: no capabilities, no network.
            # Named before it is asked for, then created and started: stop() removes it after an interrupt
            # at any point, even one that lands before the engine's answer.
            self.container_name = f"crossboard-{self.label}-{uuid.uuid4().hex[:12]}"
            self.creating = True
            self.container = self.engine().containers.create(
                self.image,
                ["sleep", "infinity"],
                name=self.container_name,
                init=True,
                user=self.user,
                volumes=volumes,
                labels={RUNTIME_LABEL: self.label, OWNER_LABEL: owner_label()},
                network_mode="host" if self.network else "none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                working_dir=CONTAINER_ROOT,
            )
            self.creating = False
            self.container.start()
        except APIError as error:
            raise InfrastructureError(f"cannot start the toolchain container from {self.image}: {error}") from None
        return self.container

    def stop(self) -> None:
        if self.container_name is None:
            return
        # Interrupted while the engine was creating it, the container may appear only after this asks:
        # a busy engine was seen to answer "no such container" and create it a moment later.
        tries = CREATION_SETTLE_TRIES if self.creating else 1
        for attempt in range(tries):
            try:
                self.engine().api.remove_container(self.container_name, force=True)
                break
            except NotFound:
                if attempt + 1 < tries:
                    time.sleep(0.25)
        self.container, self.container_name, self.creating = None, None, False

    def run(self, argv, tee, env=None, cwd=None) -> int:
        container = self.container or self._start_container()
        api = self.engine().api
        try:
            # exec_run(stream=True) gives no exit code; the low-level API does.
            exec_id = api.exec_create(container.id, argv, environment=env or {}, workdir=cwd, user=self.user)
            for chunk in api.exec_start(exec_id, stream=True):
                tee.write(chunk)
            return api.exec_inspect(exec_id)["ExitCode"]
        except DockerException as error:
            raise InfrastructureError(f"the Docker engine failed running {argv[0]} in the toolchain container: {error}") from None


IMAGE_INSIDE = "CROSSBOARD_TOOLCHAIN_IMAGE"  # `<ref>@<id>` of the toolchain image this process runs in


def image_inside() -> dict[str, str]:
    """The toolchain image crossboard runs inside, as the engine build told it; {} when not told."""
    ref, _, image_id = os.environ.get(IMAGE_INSIDE, "").rpartition("@")
    return {"ref": ref, "id": image_id} if ref and image_id else {}


def owner_label(pid: int | None = None) -> str:
    """host:pid-namespace:pid of the crossboard process a container serves: CI jobs that share an engine
    and a host name but not a PID namespace see other pids, so each reaps only its own orphans."""
    return f"{socket.gethostname()}:{_pid_namespace()}:{pid or os.getpid()}"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return "unknown"


def remove_orphans(client: docker.DockerClient) -> list[str]:
    """Remove toolchain containers whose crossboard process on this host is gone (killed with SIGKILL,
    say): each would otherwise sleep forever. Returns their names."""
    removed = []
    # every state: a process killed between creating and starting its container leaves one never started
    for container in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
        host, namespace, pid = (container.labels[OWNER_LABEL].split(":") + ["", ""])[:3]
        mine = host == socket.gethostname() and namespace == _pid_namespace() != "unknown"
        if not mine or not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue  # another machine's, another PID namespace's (which this one cannot see), or alive
        try:
            container.remove(force=True)
            removed.append(container.name)
        except NotFound:
            pass
    return removed
