"""Booting a new kernel once, with the stock boot menu back before it starts.

U-Boot's standard boot runs a boot.scr from the boot partition when it finds no extlinux.conf there (and
TI's BeaglePlay U-Boot runs one before it even looks). So for a try, crossboard moves extlinux.conf aside
and writes a boot.scr that, in U-Boot, first writes the stock extlinux.conf back and deletes itself, then
boots the new kernel. Whatever that kernel does, panic (`panic=` reboots it), hang (a power cycle) or
come up, the next boot is the stock menu's; crossboard makes the new kernel the default only after it
came up and its modules loaded."""

from __future__ import annotations

import re
import struct
import time
import zlib

from ..errors import UserError

HIDDEN_SUFFIX = ".crossboard-try"  # extlinux.conf while the try is pending
SCRIPT = "boot.scr"  # at the root of the boot partition, where standard boot looks for it
SCRIPT_NAME = "crossboard try-once"  # in its header: how rollback tells our boot.scr from a board's own
PANIC_SECONDS = 10  # on the try's command line: a panicking kernel reboots, into the stock menu

# what may stand in a path U-Boot reads from a script or extlinux.conf: it splits arguments at spaces, and
# `;` or `$` would be commands or variables of their own
BOOT_PATH = re.compile(r"^[A-Za-z0-9._/+-]+$")

IH_MAGIC, IH_OS_LINUX, IH_ARCH_ARM64, IH_TYPE_SCRIPT = 0x27051956, 5, 22, 6


def check_boot_path(path: str | None, board: str) -> None:
    if path is not None and not BOOT_PATH.match(path):
        raise UserError(
            f"{board}: {path!r} would reach U-Boot, which takes only plain paths ([A-Za-z0-9._/+-]); nothing was changed"
        )


def script_text(conf: str, kernel: str, append: str, fdt: str | None, initrd: str | None = None) -> str:
    """U-Boot commands: `conf`, `kernel`, `fdt` and `initrd` are paths on the boot partition
    ("/extlinux/extlinux.conf"); without `fdt`, the device tree U-Boot has (QEMU's, or the one it was
    started with). If the stock menu cannot be written back, the new kernel is not tried and the stock
    menu is booted from where it was moved (with sysboot, where U-Boot has it); if the script cannot
    remove itself, the new kernel is not tried either (the try would not be once) and the stock menu,
    back in its place, boots."""
    for path in (conf, kernel, fdt, initrd):
        check_boot_path(path, "boot.scr")
    part = "${devtype} ${devnum}:${distro_bootpart}"
    args = f"{append} panic={PANIC_SECONDS}".strip().replace('"', "")
    load_fdt = f"load {part} ${{fdt_addr_r}} {fdt} && setenv cb_fdt ${{fdt_addr_r}} && " if fdt else ""
    # last: booti takes the initrd's size from the filesize its load leaves
    load_initrd = (
        f" && load {part} ${{ramdisk_addr_r}} {initrd} && setenv cb_rd ${{ramdisk_addr_r}}:${{filesize}}" if initrd else ""
    )
    return f"""echo crossboard: putting the stock boot menu back, then trying {kernel} once
if load {part} ${{kernel_addr_r}} {conf}{HIDDEN_SUFFIX} && fatwrite {part} ${{kernel_addr_r}} {conf} ${{filesize}}; then
  if fatrm {part} /{SCRIPT}; then
    setenv cb_fdt ${{fdtcontroladdr}}
    setenv cb_rd -
    if {load_fdt}load {part} ${{kernel_addr_r}} {kernel}{load_initrd}; then
      setenv bootargs "{args}"
      booti ${{kernel_addr_r}} ${{cb_rd}} ${{cb_fdt}}
    fi
    echo crossboard: {kernel} did not start, resetting into the stock menu
    reset
  fi
  echo crossboard: could not remove /{SCRIPT}, so {kernel} is not tried, booting the stock menu
  sysboot {part} any ${{pxefile_addr_r}} {conf}
fi
echo crossboard: could not put {conf} back, so {kernel} is not tried, booting the stock menu from {conf}{HIDDEN_SUFFIX}
sysboot {part} any ${{pxefile_addr_r}} {conf}{HIDDEN_SUFFIX}
"""


def script_image(text: str) -> bytes:
    """`text` as U-Boot's `source` reads it (what `mkimage -T script` makes): a legacy image header, then
    a list of part lengths ended by 0, then the script."""
    body = text.encode()
    data = struct.pack(">II", len(body), 0) + body
    name = SCRIPT_NAME.encode().ljust(32, b"\0")
    made = int(time.time())

    def header(header_crc: int) -> bytes:
        return struct.pack(
            ">IIIIIIIBBBB32s",
            IH_MAGIC,
            header_crc,
            made,
            len(data),
            0,
            0,
            zlib.crc32(data),
            IH_OS_LINUX,
            IH_ARCH_ARM64,
            IH_TYPE_SCRIPT,
            0,
            name,
        )

    return header(zlib.crc32(header(0))) + data
