"""The virtual board: QEMU arm64 booting our kernel and a small root with an SSH server, reachable
on a port of 127.0.0.1 only, with a host key known before it first boots."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..board.load import LoadedBoard
from ..deploy.run import built_manifest
from ..errors import InfrastructureError, UserError
from ..remote import connection as remote_connection
from ..settings import Settings
from ..toolchain.stream import Tee
from .keys import ensure_keys

GUEST_DEBS = "/usr/share/crossboard/guest-debs"
MAKE_ROOT = Path(__file__).with_name("make-root")


@dataclass(frozen=True)
class VirtualBoard:
    board: LoadedBoard
    settings: Settings

    def __post_init__(self):
        if self.board.spec.virtual is None:
            raise UserError(f"{self.board.file.name}: {self.board.name} is not a virtual board (no `virtual:` section)")

    @property
    def out_dir(self) -> Path:
        return self.settings.out_dir / self.board.name

    @property
    def work_dir(self) -> Path:
        """In the build folder: the root image and what goes into it."""
        return self.settings.cache_dir / "build" / self.board.name / "virtual"

    @property
    def keys_dir(self) -> Path:
        return self.board.project_root / ".crossboard" / "virtual" / self.board.name

    @property
    def root_image(self) -> Path:
        return self.work_dir / "root.cpio.gz"

    @property
    def pidfile(self) -> Path:
        return self.out_dir / "qemu.pid"

    @property
    def console_log(self) -> Path:
        return self.out_dir / "console.log"

    @property
    def port(self) -> int:
        return self.board.spec.connection.port or 22

    def pid(self) -> int | None:
        """QEMU's pid when it runs, else None (a stale pidfile is removed)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
            if "qemu" not in Path(f"/proc/{pid}/cmdline").read_text():
                raise ProcessLookupError
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            self.pidfile.unlink(missing_ok=True)
            return None


def ensure_root(vboard: VirtualBoard, echo: bool = True) -> Path:
    """Make the root image when its inputs changed: the modules tree, the keys, the script, the image."""
    from ..build.pipeline import build_folders, make_runtime

    manifest = built_manifest(vboard.board, vboard.out_dir)
    modules_tree = next(a for a in manifest["artifacts"] if a["kind"] == "modules-tree")
    keys = ensure_keys(vboard.keys_dir)
    folders = build_folders(vboard.board, vboard.settings)
    runtime = make_runtime("docker", vboard.settings, folders, echo, prepare=True)
    inputs = hashlib.sha256("\0".join([
        modules_tree["sha256"], keys["host_pub"].read_text(), keys["client_pub"].read_text(),
        MAKE_ROOT.read_text(), runtime.image]).encode()).hexdigest()
    stamp = vboard.work_dir / "root.inputs"
    if vboard.root_image.is_file() and stamp.is_file() and stamp.read_text() == inputs:
        return vboard.root_image
    vboard.work_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keys["host"], vboard.work_dir / "host_key")
    shutil.copyfile(keys["client_pub"], vboard.work_dir / "authorized_keys")
    inside_work = f"{runtime.path('build')}/virtual"
    with runtime, Tee(vboard.out_dir / "logs" / "virtual-root.log", echo=echo) as tee:
        runtime.check(["sh", f"{runtime.path('project')}/{MAKE_ROOT.relative_to(vboard.board.project_root)}",
                       GUEST_DEBS, f"{runtime.path('out')}/{modules_tree['path']}", f"{inside_work}/host_key",
                       f"{inside_work}/authorized_keys", vboard.board.name, f"{inside_work}/root.cpio.gz"],
                      tee, what="making the virtual board's root")
    stamp.write_text(inputs)
    return vboard.root_image


def _remember_host_key(vboard: VirtualBoard) -> None:
    """The guest's key under [127.0.0.1]:PORT in the project's known_hosts, replacing an older one."""
    known_hosts = remote_connection.PROJECT_KNOWN_HOSTS
    name = f"[127.0.0.1]:{vboard.port}"
    lines = known_hosts.read_text().splitlines() if known_hosts.is_file() else []
    kept = [line for line in lines if not line.startswith(name + " ")]
    public = (vboard.keys_dir / "host_key.pub").read_text().split()[:2]
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.write_text("\n".join(kept + [f"{name} {' '.join(public)}"]) + "\n")


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(16).startswith(b"SSH-")
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def qemu_command(vboard: VirtualBoard, image: Path, root: Path) -> list[str]:
    virtual = vboard.board.spec.virtual
    return [
        "qemu-system-aarch64", "-M", virtual.machine, "-cpu", virtual.cpu, "-smp", str(virtual.cpus),
        "-m", str(virtual.memory_mb), "-display", "none", "-no-reboot", "-daemonize",
        "-kernel", str(image), "-initrd", str(root),
        "-append", "console=ttyAMA0 rdinit=/init panic=1",
        "-serial", f"file:{vboard.console_log}", "-pidfile", str(vboard.pidfile),
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{vboard.port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-fsdev", f"local,id=out,path={vboard.out_dir},security_model=none,readonly=on",
        "-device", "virtio-9p-pci,fsdev=out,mount_tag=out",
    ]


def up(vboard: VirtualBoard, echo: bool = True) -> int:
    """Boot the board and wait for its SSH banner; returns QEMU's pid (already running: that one)."""
    running = vboard.pid()
    if running:
        return running
    if shutil.which("qemu-system-aarch64") is None:
        raise InfrastructureError("qemu-system-aarch64 is not installed: apt-get install qemu-system-arm")
    if not _port_free(vboard.port):
        raise UserError(f"{vboard.board.file.name}: connection.port: 127.0.0.1:{vboard.port} is in use; "
                        f"set another port in boards/{vboard.board.name}.local.yaml")
    image = vboard.out_dir / vboard.board.spec.kernel.image
    root = ensure_root(vboard, echo)
    _remember_host_key(vboard)
    vboard.console_log.unlink(missing_ok=True)
    started = subprocess.run(qemu_command(vboard, image, root), capture_output=True, text=True)
    if started.returncode != 0:
        raise InfrastructureError(f"qemu-system-aarch64 failed to start: {started.stderr.strip()}")
    deadline = time.monotonic() + vboard.board.spec.virtual.boot_timeout
    while time.monotonic() < deadline:
        pid = vboard.pid()
        if pid is None:
            raise InfrastructureError(f"the virtual board stopped while booting: {_console_tail(vboard)}")
        if _banner(vboard.port):
            return pid
        time.sleep(0.5)
    down(vboard)
    raise InfrastructureError(f"no SSH banner from the virtual board within {vboard.board.spec.virtual.boot_timeout} s: "
                              f"{_console_tail(vboard)}")


def _console_tail(vboard: VirtualBoard) -> str:
    lines = vboard.console_log.read_text(errors="replace").splitlines() if vboard.console_log.is_file() else []
    return f"last console lines ({vboard.console_log}): " + " | ".join(lines[-5:])


def down(vboard: VirtualBoard) -> bool:
    """Stop QEMU by its pid: SIGTERM, then SIGKILL after 10 s. False when it was not running."""
    pid = vboard.pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if vboard.pid() is None:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    vboard.pidfile.unlink(missing_ok=True)
    return True


def status(vboard: VirtualBoard) -> str:
    pid = vboard.pid()
    if pid is None:
        return f"{vboard.board.name}: down"
    ssh = "SSH answering" if _banner(vboard.port) else "no SSH banner yet"
    return f"{vboard.board.name}: up, pid {pid}, 127.0.0.1:{vboard.port}, {ssh}, console {vboard.console_log}"
