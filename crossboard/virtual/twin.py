"""A hardware board's twin: its own build (kernel, modules, apps) booted on QEMU's `virt` machine with
the virtual board's root, so deploy can be tried before the board is at hand. Every arm64 board has
one; nothing in its board file is needed for it."""

from __future__ import annotations

import dataclasses
import zlib

from ..board.load import LoadedBoard
from ..board.schema import Virtual
from ..errors import UserError

# Twins listen on 127.0.0.1:TWIN_PORTS.start + a hash of the board's name, clear of the virtual boards'
# 2222 and 2223; a port in use is said at qemu.up.
TWIN_PORTS = range(2300, 2800)
# A full kernel's modules tree is in the initramfs, unpacked in RAM: a defconfig one is hundreds of MB.
TWIN_MEMORY_MB = 2048
# Under emulation a defconfig kernel probes every driver it has before the root starts.
TWIN_BOOT_TIMEOUT = 900


def twin_of(board: LoadedBoard) -> LoadedBoard:
    """The board as its twin: same name, build and modules; reached on 127.0.0.1 with the virtual
    board's keys and user (`debian`, NOPASSWD sudo); no boot partition, since QEMU loads the kernel."""
    spec = board.spec
    if spec.virtual is not None:
        raise UserError(f"--twin: {board.name} is a virtual board already (boards/{board.file.name})")
    port = TWIN_PORTS.start + zlib.crc32(board.name.encode()) % len(TWIN_PORTS)
    connection = spec.connection.model_copy(
        update={
            "host": "127.0.0.1",
            "port": port,
            "user": "debian",
            "key": f".crossboard/virtual/{board.name}/id_ed25519",
            "host_key_policy": "strict",
            "sudo": True,
        }
    )
    virtual = Virtual(memory_mb=TWIN_MEMORY_MB, boot_timeout=TWIN_BOOT_TIMEOUT)
    deploy = spec.deploy.model_copy(update={"boot": None, "console": "QEMU's serial log, out/<board>/console.log"})
    twin_spec = spec.model_copy(update={"connection": connection, "virtual": virtual, "deploy": deploy})
    return dataclasses.replace(board, spec=twin_spec)


def what_a_twin_cannot_show(twin: LoadedBoard) -> str:
    dtbs = ", ".join(twin.spec.kernel.dtbs) or "none"
    return (
        f"{twin.name} twin: the board's own kernel, modules and apps on QEMU virt; not shown: the SoC's own "
        f"drivers and the board's device tree ({dtbs}), QEMU gives its own; deploy to it with "
        f"invoke deploy --board {twin.name} --twin"
    )
