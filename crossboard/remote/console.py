"""A board's serial console, read while the board reboots: what a kernel that does not come up printed.

`deploy.console` is either words for a person (where the console is) or a URL crossboard reads:
`socket://HOST:PORT` (a raw TCP console: ser2net in raw mode, QEMU's chardev socket) or
`rfc2217://HOST:PORT` (ser2net's telnet mode, what a labgrid exporter serves), through pyserial.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..board.load import LoadedBoard

SCHEMES = ("socket://", "rfc2217://")
TAIL_LINES = 6
# What kernels and U-Boot print when a boot fails: the lines an error quotes first.
FAILURE = re.compile(
    r"Kernel panic|Oops|BUG:|Unable to handle|Internal error|Bad Linux ARM64 Image magic|Wrong Image Format|Bad Data CRC"
)
REBOOT_LOG = "logs/console-reboot.log"  # in the board's output folder: the console of its last reboot


def console_url(board: LoadedBoard) -> str | None:
    console = board.spec.deploy.console
    return console if console.startswith(SCHEMES) else None


class Capture:
    """Everything the console says from now on, into a log file, read by a thread of its own."""

    def __init__(self, url: str, log: Path):
        self.url, self.log = url, log
        self.stopping = threading.Event()
        import serial  # here: a build run inside the toolchain image never reads a console, nor has pyserial

        self.port = serial.serial_for_url(url, timeout=0.2)
        log.parent.mkdir(parents=True, exist_ok=True)
        self.file = log.open("wb")
        self.thread = threading.Thread(target=self._read, name=f"console {url}", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while not self.stopping.is_set():
                # what is there, at least a byte: pyserial drops what a longer read had gathered when
                # the console disconnects (a board powered off, an exporter restarted)
                data = self.port.read(max(1, self.port.in_waiting))
                if data:
                    self.file.write(data)
                    self.file.flush()
        except OSError:  # pyserial's SerialException is one
            pass  # the console went away (an exporter restarted): what was read is kept

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.port.close()
        self.file.close()

    def lines(self) -> list[str]:
        return [line.strip() for line in self.log.read_bytes().decode(errors="replace").splitlines() if line.strip()]

    def tail(self) -> str:
        """The last lines the console printed, on one line: for an error message."""
        return " | ".join(self.lines()[-TAIL_LINES:]) or "(it printed nothing)"

    def hint(self) -> str:
        """What an error says where the board's console would help: what it said about a failure (a
        board that came back by itself has printed its next boot since), else its last lines."""
        failures = [line for line in self.lines() if FAILURE.search(line)]
        if failures:
            return f"its console said: {' | '.join(failures[:TAIL_LINES])} (all of it: {self.log})"
        return f"its console's last lines: {self.tail()} (all of it: {self.log})"


@contextmanager
def reading_console(board: LoadedBoard, log: Path | None) -> Iterator[Capture | None]:
    """The board's console read into `log` while the body runs, when deploy.console is a URL (and a log
    is given); a console that cannot be opened is said once and the work goes on without it (it only
    explains failures)."""
    url = console_url(board)
    if url is None or log is None:
        yield None
        return
    try:
        capture = Capture(url, log)
    except (OSError, ValueError) as error:  # pyserial's SerialException is an OSError
        print(f"crossboard: {board.name}: not reading its console {url} ({error})", file=sys.stderr, flush=True)
        yield None
        return
    try:
        yield capture
    finally:
        capture.stop()


def console_hint(board: LoadedBoard, capture: Capture | None) -> str:
    return capture.hint() if capture is not None else f"see {board.spec.deploy.console}"
