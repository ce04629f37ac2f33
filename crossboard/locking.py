"""Locks on folders that several crossboard processes may share: a board's kernel build folder (shared
by every clone of the project), a project's work and out folders, a kernel source being unpacked. A
process that has to wait says which process holds the lock, and since when."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_file(folder: Path) -> Path:
    """Beside the folder, not in it, so that removing the folder does not remove its lock."""
    return folder.parent / f".{folder.name}.lock"


def _me() -> str:
    command = " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200]
    return f"pid {os.getpid()} on {socket.gethostname()} ({command}), since {time.strftime('%H:%M:%S', time.localtime())}"


@contextmanager
def holding(folder: Path, what: str, say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock of `folder` (described as `what` to others) for the body; wait for it when held."""
    path = lock_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            say(f"crossboard: waiting for {what} ({folder}), held by {holder}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.truncate(0)
        handle.write(_me() + "\n")
        handle.flush()
        yield
