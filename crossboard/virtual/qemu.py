"""The virtual board: QEMU arm64 booting our kernel and a small root with an SSH server, reachable
on a port of 127.0.0.1 only, with a host key known before it first boots."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..artifacts.files import write_atomically
from ..artifacts.manifest import finished_build
from ..board.load import LoadedBoard, load_board
from ..board.schema import Virtual
from ..errors import InfrastructureError, UserError
from ..locking import holding
from ..settings import Settings
from ..toolchain.stream import Tee
from .keys import ensure_keys

GUEST_DEBS = "/usr/share/crossboard/guest-debs"
U_BOOT = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"  # in the toolchain image (u-boot-qemu)
MAKE_ROOT = Path(__file__).with_name("make-root")
MAKE_DISK = Path(__file__).with_name("make-disk")
STOCK_EXTLINUX = Path(__file__).with_name("stock-extlinux.conf")


@dataclass(frozen=True)
class VirtualBoard:
    board: LoadedBoard
    settings: Settings
    twin: bool = False  # a hardware board's twin (virtual/twin.py)

    def __post_init__(self):
        if self.board.spec.virtual is None:
            raise UserError(f"{self.board.file.name}: {self.board.name} is not a virtual board (no `virtual:` section)")

    @property
    def virtual(self) -> Virtual:
        assert self.board.spec.virtual is not None  # checked when made
        return self.board.spec.virtual

    @property
    def out_dir(self) -> Path:
        return self.board.out_dir(self.settings.out_dir)

    @property
    def work_dir(self) -> Path:
        """In the board's work folder (its keys are this clone's): the root image and what goes into it."""
        from ..pipeline.pipeline import work_folder

        return work_folder(self.board, self.settings) / "virtual"

    @property
    def keys_dir(self) -> Path:
        return self.board.project_root / ".crossboard" / "virtual" / self.board.name

    @property
    def root_image(self) -> Path:
        return self.work_dir / "root.cpio.gz"

    @property
    def disk_image(self) -> Path:
        """The U-Boot shape's disk as made: stock kernel, stock extlinux.conf."""
        return self.work_dir / "disk.img"

    @property
    def disk(self) -> Path:
        """The disk the board runs on, with every change made on the board: a qcow2 overlay of
        disk_image, so that it survives qemu.down and up, and `qemu.up --fresh` discards it."""
        return self.out_dir / "disk.qcow2"

    @property
    def pidfile(self) -> Path:
        return self.out_dir / "qemu.pid"

    @property
    def monitor(self) -> Path:
        """QEMU's QMP socket: how the board is power-cycled (reset) from outside."""
        return self.out_dir / "qmp.sock"

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


def kernel_board(vboard: VirtualBoard) -> LoadedBoard:
    """The board whose build the virtual board boots first: its own, or with U-Boot the stock kernel's."""
    name = vboard.virtual.stock_kernel
    return load_board(name, vboard.board.file.parent) if name else vboard.board


def boot_media(vboard: VirtualBoard, echo: bool = True) -> list[str]:
    """QEMU's arguments for what the board boots, made again only when their inputs changed: the
    kernel and modules tree, the keys, the scripts, the toolchain image."""
    from ..pipeline.pipeline import build_folders, make_runtime

    stock = kernel_board(vboard)
    stock_build = finished_build(stock.out_dir(vboard.settings.out_dir), stock.name)
    kernel, modules_tree = stock_build.one("kernel"), stock_build.one("modules-tree")
    if kernel is None or modules_tree is None:
        raise UserError(
            f"{stock_build.out_dir}: the build has no kernel image or modules tree: run invoke build --board {stock.name}"
        )
    keys = ensure_keys(vboard.keys_dir)
    runtime = make_runtime(
        "docker", vboard.settings, vboard.board, build_folders(vboard.board, vboard.settings), echo, prepare=True
    )
    u_boot = vboard.virtual.boot == "u-boot"
    scripts = [MAKE_ROOT, MAKE_DISK, STOCK_EXTLINUX] if u_boot else [MAKE_ROOT]
    inputs = hashlib.sha256(
        "\0".join(
            [
                modules_tree.sha256,
                kernel.sha256,
                keys["host_pub"].read_text(),
                keys["client_pub"].read_text(),
                runtime.toolchain()["id"],
            ]
            + [script.read_text() for script in scripts]
        ).encode()
    ).hexdigest()
    product = vboard.disk_image if u_boot else vboard.root_image
    stamp = vboard.work_dir / "inputs"
    if not (product.is_file() and stamp.is_file() and stamp.read_text() == inputs):
        stamp.unlink(missing_ok=True)
        if vboard.disk.is_file():  # an overlay on the old disk image would be garbage
            vboard.disk.unlink()
            print(
                f"{vboard.board.name}: its disk is made again ({stock.name}'s build or the root changed): "
                "what was changed on the board is gone"
            )
        _make(vboard, runtime, stock_build.local(kernel), stock_build.local(modules_tree), keys, echo)
        stamp.write_text(inputs)
    if not u_boot:
        return [
            "-kernel",
            str(vboard.out_dir / vboard.board.spec.kernel.image),
            "-initrd",
            str(product),
            "-append",
            "console=ttyAMA0 rdinit=/init panic=1",
            "-no-reboot",
        ]
    if not vboard.disk.is_file():
        _run_host(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(product), str(vboard.disk)],
            "qemu-img cannot make the board's disk",
        )
    return [
        "-bios",
        str(vboard.work_dir / "u-boot.bin"),
        "-drive",
        f"if=pflash,unit=1,format=raw,readonly=on,file={_u_boot_environment(vboard.work_dir)}",
        "-drive",
        f"if=none,id=disk,format=qcow2,file={vboard.disk}",
        "-device",
        "virtio-blk-pci,drive=disk",
    ]


# U-Boot's qemu_arm64 environment as it comes, with what a BeaglePlay's has for a gzip-compressed kernel
# (where booti unpacks it, and how big it may be): the stock menu boots Image.gz.
U_BOOT_ENVIRONMENT = {
    "arch": "arm",
    "baudrate": "115200",
    "board": "qemu-arm",
    "board_name": "qemu-arm",
    "boot_targets": "qfw usb scsi virtio nvme dhcp",
    "bootcmd": "bootflow scan -lb",
    "bootdelay": "2",
    "cpu": "armv8",
    "fdt_addr": "0x40000000",
    "fdt_high": "0xffffffff",
    "initrd_high": "0xffffffff",
    "kernel_addr_r": "0x40400000",
    "kernel_comp_addr_r": "0x50000000",
    "kernel_comp_size": "0x4000000",
    "loadaddr": "0x40200000",
    "preboot": "usb start",
    "pxefile_addr_r": "0x40300000",
    "ramdisk_addr_r": "0x44000000",
    "scriptaddr": "0x40200000",
    "stderr": "serial,vidconsole",
    "stdin": "serial,usbkbd",
    "stdout": "serial,vidconsole",
    "vendor": "emulation",
}
U_BOOT_ENV_SIZE = 0x40000  # CONFIG_ENV_SIZE of qemu_arm64, at the start of the second flash bank
FLASH_BANK = 64 << 20


def _u_boot_environment(folder: Path) -> Path:
    """The second flash bank with U_BOOT_ENVIRONMENT where U-Boot loads its environment from: a CRC32,
    then `name=value` strings."""
    text = b"".join(f"{name}={value}".encode() + b"\0" for name, value in sorted(U_BOOT_ENVIRONMENT.items())) + b"\0"
    data = text.ljust(U_BOOT_ENV_SIZE - 4, b"\0")
    image = folder / f"u-boot-env-{hashlib.sha256(data).hexdigest()[:12]}.img"
    if not image.is_file():
        block = zlib.crc32(data).to_bytes(4, "little") + data
        write_atomically(image, block + b"\xff" * (FLASH_BANK - len(block)))
    return image


def _make(vboard: VirtualBoard, runtime, kernel: Path, modules_tree: Path, keys: dict, echo: bool) -> None:
    """Run make-root (and for U-Boot make-disk) in the toolchain image, on copies of their inputs
    in the build folder, the one folder of the board's that the container sees whole."""
    work, inside = vboard.work_dir, f"{runtime.path('work')}/virtual"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keys["host"], work / "host_key")
    shutil.copyfile(keys["client_pub"], work / "authorized_keys")
    shutil.copyfile(modules_tree, work / "modules.tar.gz")

    def crossboard_file(path: Path) -> str:
        """crossboard's own script, copied beside the inputs: the board's project (a lab's board files,
        say) need not be crossboard's checkout, so the container's project folder may not hold it."""
        shutil.copyfile(path, work / path.name)
        return f"{inside}/{path.name}"

    u_boot = vboard.virtual.boot == "u-boot"
    with runtime, Tee(vboard.out_dir / "logs" / "virtual-root.log", echo=echo) as tee:
        root = f"{inside}/{'root.tar' if u_boot else vboard.root_image.name}"
        runtime.check(
            [
                "sh",
                crossboard_file(MAKE_ROOT),
                GUEST_DEBS,
                f"{inside}/modules.tar.gz",
                f"{inside}/host_key",
                f"{inside}/authorized_keys",
                vboard.board.name,
                "disk" if u_boot else "initramfs",
                root,
            ],
            tee,
            what="making the virtual board's root",
        )
        if u_boot:
            shutil.copyfile(kernel, work / "stock-Image")
            runtime.check(
                [
                    "sh",
                    crossboard_file(MAKE_DISK),
                    root,
                    f"{inside}/stock-Image",
                    crossboard_file(STOCK_EXTLINUX),
                    f"{inside}/{vboard.disk_image.name}",
                ],
                tee,
                what="making the virtual board's disk",
            )
            runtime.check(["cp", U_BOOT, f"{inside}/u-boot.bin"], tee, what="copying U-Boot out of the image")
            for leftover in ("root.tar", "stock-Image"):
                (work / leftover).unlink()


def _run_host(command: list[str], what: str) -> None:
    if shutil.which(command[0]) is None:
        raise InfrastructureError(f"{command[0]} is not installed: run scripts/install-deps")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise InfrastructureError(f"{what}: {done.stderr.strip()}")


def _remember_host_key(vboard: VirtualBoard) -> None:
    """The guest's key under [127.0.0.1]:PORT in the project's known_hosts, replacing an older one."""
    known_hosts = vboard.settings.known_hosts
    name = f"[127.0.0.1]:{vboard.port}"
    lines = known_hosts.read_text().splitlines() if known_hosts.is_file() else []
    kept = [line for line in lines if not line.startswith(name + " ")]
    public = (vboard.keys_dir / "host_key.pub").read_text().split()[:2]
    write_atomically(known_hosts, ("\n".join(kept + [f"{name} {' '.join(public)}"]) + "\n").encode())


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(16).startswith(b"SSH-")
    except OSError:
        return False


def _port_free(port: int) -> bool:
    """Whether QEMU could listen there: connections of a board just stopped, still in TIME_WAIT, are no
    obstacle (QEMU's forward reuses the address as this probe does); a listener is."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def qemu_command(vboard: VirtualBoard, media: list[str]) -> list[str]:
    virtual = vboard.virtual
    return [
        "qemu-system-aarch64",
        "-M",
        virtual.machine,
        "-cpu",
        virtual.cpu,
        "-smp",
        str(virtual.cpus),
        "-m",
        str(virtual.memory_mb),
        "-display",
        "none",
        "-daemonize",
        *media,
        # the console on a TCP port QEMU picks (console_url), all of it also in console.log
        "-chardev",
        f"socket,id=console,host=127.0.0.1,port=0,server=on,wait=off,logfile={vboard.console_log}",
        "-serial",
        "chardev:console",
        "-pidfile",
        str(vboard.pidfile),
        "-qmp",
        f"unix:{vboard.monitor},server=on,wait=off",
        "-netdev",
        f"user,id=n0,hostfwd=tcp:127.0.0.1:{vboard.port}-:22",
        # no option ROM: it is only for network boot, and ipxe-qemu may not be installed
        "-device",
        "virtio-net-pci,netdev=n0,romfile=",
        "-fsdev",
        f"local,id=out,path={vboard.out_dir},security_model=none,readonly=on",
        "-device",
        "virtio-9p-pci,fsdev=out,mount_tag=out",
    ]


def up(vboard: VirtualBoard, echo: bool = True, fresh: bool = False) -> int:
    """Boot the board and wait for its SSH banner; returns QEMU's pid (already running: that one).
    `fresh`: the U-Boot shape starts again from the disk as made, whatever was changed on it."""
    running = vboard.pid()
    if running:
        if fresh:
            raise UserError(f"{vboard.board.name} is running: invoke qemu.down --board {vboard.board.name} before --fresh")
        return running
    if shutil.which("qemu-system-aarch64") is None:
        raise InfrastructureError("qemu-system-aarch64 is not installed: apt-get install qemu-system-arm")
    if not _port_free(vboard.port):
        where = (
            "the twin's port, from its name: stop what listens there"
            if vboard.twin
            else (f"set another port in boards/{vboard.board.name}.local.yaml")
        )
        raise UserError(f"{vboard.board.file.name}: connection.port: 127.0.0.1:{vboard.port} is in use; {where}")
    from ..pipeline.pipeline import work_folder

    what = f"this clone's work folder of {vboard.board.name}"
    with holding(work_folder(vboard.board, vboard.settings), what, print if echo else lambda line: None):
        if fresh:
            vboard.disk.unlink(missing_ok=True)
        media = boot_media(vboard, echo)  # the root (and disk) made in the work folder, as a build writes it
    _remember_host_key(vboard)
    vboard.console_log.unlink(missing_ok=True)
    started = subprocess.run(qemu_command(vboard, media), capture_output=True, text=True)
    if started.returncode != 0:
        raise InfrastructureError(f"qemu-system-aarch64 failed to start: {started.stderr.strip()}")
    deadline = time.monotonic() + vboard.virtual.boot_timeout
    while time.monotonic() < deadline:
        pid = vboard.pid()
        if pid is None:
            raise InfrastructureError(f"the virtual board stopped while booting: {_console_tail(vboard)}")
        if _banner(vboard.port):
            return pid
        time.sleep(0.5)
    down(vboard)
    raise InfrastructureError(
        f"no SSH banner from the virtual board within {vboard.virtual.boot_timeout} s: {_console_tail(vboard)}"
    )


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


def _monitor(vboard: VirtualBoard, command: str):
    """A QMP command's answer from the running board's QEMU."""
    if vboard.pid() is None:
        raise UserError(f"{vboard.board.name} is not running: invoke qemu.up --board {vboard.board.name}")
    try:
        with socket.socket(socket.AF_UNIX) as monitor:
            monitor.settimeout(10)
            monitor.connect(str(vboard.monitor))
            replies = monitor.makefile("rb")
            replies.readline()  # QEMU's greeting
            for each in ("qmp_capabilities", command):
                monitor.sendall(json.dumps({"execute": each}).encode() + b"\n")
                reply = json.loads(replies.readline())
                while "event" in reply:  # events may come before the answer
                    reply = json.loads(replies.readline())
                if "error" in reply:
                    raise InfrastructureError(f"QEMU refused {each}: {reply['error']}")
            return reply["return"]
    except (OSError, ValueError) as error:
        raise InfrastructureError(f"{vboard.board.name}: cannot reach QEMU's monitor {vboard.monitor}: {error}") from None


def reset(vboard: VirtualBoard) -> None:
    """Power-cycle the running board, as pressing its reset button would: a QMP system_reset."""
    _monitor(vboard, "system_reset")


def console_url(vboard: VirtualBoard) -> str:
    """The running board's serial console as a board file names one (`deploy.console`)."""
    for device in _monitor(vboard, "query-chardev"):
        if device["label"] == "console":
            # "disconnected:tcp:127.0.0.1:40123,server=on" (or "tcp:..." while a client reads it)
            address = device["filename"].split("tcp:", 1)[1].split(",", 1)[0]
            return f"socket://{address}"
    raise InfrastructureError(f"{vboard.board.name}: QEMU has no console chardev (started by another crossboard?)")


def status(vboard: VirtualBoard) -> str:
    pid = vboard.pid()
    if pid is None:
        return f"{vboard.board.name}: down"
    ssh = "SSH answering" if _banner(vboard.port) else "no SSH banner yet"
    console = f"console {console_url(vboard)} (log {vboard.console_log})"
    return f"{vboard.board.name}: up, pid {pid}, 127.0.0.1:{vboard.port}, {ssh}, {console}"
