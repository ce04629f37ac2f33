"""Rebooting a board and seeing which kernel came back: `deploy --kernel --reboot`, `rollback --reboot`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import paramiko

from ..board.load import LoadedBoard
from ..errors import InfrastructureError, StepFailed
from ..remote.access import Access
from ..remote.connection import Session
from ..remote.console import console_hint, reading_console

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


def start_reboot(board: LoadedBoard, access: Access) -> str:
    """Ask the board to reboot; returns the boot_id it had."""
    with access.open(board) as remote:
        before = boot_id(remote)
        started = remote.run(REBOOT, privileged=True, timeout=15)
        if started.code != 0:
            raise StepFailed(f"{board.name}: reboot failed (exit {started.code}): {' '.join(started.stderr.split())}")
    return before


def wait_for_new_boot(board: LoadedBoard, access: Access, before: str, timeout: int) -> str | None:
    """The release the board runs once it answers from a boot other than `before`; None when it does
    not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            with access.open(board, wait_seconds=remaining) as remote:
                if boot_id(remote) not in ("", before):
                    return remote.run("uname -r", timeout=15).stdout.strip()
        except (TimeoutError, InfrastructureError, OSError, EOFError, paramiko.SSHException):
            pass  # still down, or going down
        time.sleep(2)
    return None


def power_cycle(board: LoadedBoard) -> bool:
    """Run the board's deploy.power_cycle command; False when it has none."""
    command = board.spec.deploy.power_cycle
    if command is None:
        return False
    try:
        done = subprocess.run(command, shell=True, cwd=board.project_root, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{board.file.name}: deploy.power_cycle did not finish within 120 s: {command}") from None
    if done.returncode != 0:
        raise StepFailed(
            f"{board.file.name}: deploy.power_cycle failed (exit {done.returncode}): {' '.join(done.stderr.split())}"
        )
    return True


def reboot_into(board: LoadedBoard, access: Access, expected_release: str, console_log: Path | None = None) -> str:
    """Reboot the board, wait for it to answer from a new boot and check it runs `expected_release`,
    its console read into `console_log` meanwhile (console.py). Returns the release; StepFailed when it
    does not come back or comes back on another kernel."""
    timeout = board.spec.deploy.reboot_timeout
    with reading_console(board, console_log) as console:
        release = wait_for_new_boot(board, access, start_reboot(board, access), timeout)
        if release is None:
            raise StepFailed(
                f"{board.name}: did not come back within {timeout} s of rebooting into {expected_release}; "
                f"{console_hint(board, console)}"
            )
        if release != expected_release:
            raise StepFailed(
                f"{board.name}: came back on {release}, not {expected_release}: the bootloader did not "
                f"boot that kernel or fell back to another label; {console_hint(board, console)}"
            )
    return release
