"""Output of a running step, sent to the terminal and to the step's log file at once."""
from __future__ import annotations

import sys
from pathlib import Path


class Tee:
    """Copies bytes to the terminal (unless quiet) and to a log file; keeps the tail for error messages."""

    def __init__(self, log_path: Path | None = None, echo: bool = True, tail_bytes: int = 4096):
        self.log_path = log_path
        self.echo = echo
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
        self.tail = (self.tail + chunk)[-self.tail_bytes:]

    def line(self, text: str) -> None:
        self.write(f"==> {text}\n".encode())

    def close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> "Tee":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
