"""Output of a running step, sent to its log file, to the terminal when asked, and to its progress."""

from __future__ import annotations

import sys
from pathlib import Path

from ..progress import Progress


class Tee:
    """Copies bytes to a log file and, with `echo`, to the terminal; counts them into `progress`; keeps the
    tail for error messages."""

    def __init__(
        self,
        log_path: Path | None = None,
        echo: bool = True,
        tail_bytes: int = 4096,
        progress: Progress | None = None,
        announce: bool | None = None,
    ):
        self.log_path = log_path
        self.echo = echo
        self.announce = echo if announce is None else announce  # line()s on the terminal
        self.progress = progress
        self.tail_bytes = tail_bytes
        self.tail = b""
        self._log = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "ab")

    def write(self, chunk: bytes) -> None:
        if self.echo:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        if self._log:
            self._log.write(chunk)
            self._log.flush()
        self.tail = (self.tail + chunk)[-self.tail_bytes :]
        if self.progress:
            self.progress.feed(chunk)

    def line(self, text: str) -> None:
        """crossboard's own word on the work, in the log and (with `announce`) on the terminal."""
        data = f"==> {text}\n".encode()
        if self.announce and not self.echo:
            sys.stdout.write(data.decode())
            sys.stdout.flush()
        self.write(data)

    def close(self) -> None:
        if self.progress:
            self.progress.finish()
            self.progress = None
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> Tee:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
