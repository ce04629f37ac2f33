"""Rebooting a board and seeing which kernel came back: `deploy --kernel --reboot`, `rollback --reboot`."""

from __future__ import annotations

import time

import paramiko

from ..board.load import LoadedBoard
from ..errors import InfrastructureError, StepFailed
from ..remote.access import Access
from ..remote.connection import Session

# A new boot has a new boot_id: the only sure sign that the board went down and came up again (a
# board still shutting down, or QEMU's port forward with no guest behind it, also accepts connections).
BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
# In the background and delayed, so the command returns before the connection drops; without a
# terminal no SIGHUP reaches it (and BusyBox boards may have no nohup).
REBOOT = (
    "command -v reboot >/dev/null || { echo 'no reboot command' >&2; exit 127; }; "
    "sh -c 'sleep 1; reboot' </dev/null >/dev/null 2>&1 &"
)


def boot_id(remote: Session) -> str:
    return remote.run(BOOT_ID, timeout=15).stdout.strip()


def reboot_into(board: LoadedBoard, access: Access, expected_release: str, before: str, timeout: int | None = None) -> str:
    """Reboot the board, whose boot_id is `before`, wait for it to answer from a new boot and check it
    runs `expected_release`. Returns the release; StepFailed when it does not come back or comes
    back on another kernel."""
    timeout = timeout or board.spec.deploy.reboot_timeout
    with access.open(board) as remote:
        started = remote.run(REBOOT, privileged=True, timeout=15)
        if started.code != 0:
            raise StepFailed(f"{board.name}: reboot failed (exit {started.code}): {' '.join(started.stderr.split())}")
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            with access.open(board, wait_seconds=remaining) as remote:
                if boot_id(remote) not in ("", before):
                    release = remote.run("uname -r", timeout=15).stdout.strip()
                    break
        except (TimeoutError, InfrastructureError, OSError, EOFError, paramiko.SSHException):
            pass  # still down, or going down
        time.sleep(2)
    else:
        raise StepFailed(
            f"{board.name}: did not come back within {timeout} s of rebooting into {expected_release}; "
            f"see {board.spec.deploy.console}"
        )
    if release != expected_release:
        raise StepFailed(
            f"{board.name}: came back on {release}, not {expected_release}: the bootloader did not "
            f"boot that kernel or fell back to another label; see {board.spec.deploy.console}"
        )
    return release
