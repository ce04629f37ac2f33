"""How far along long work is (a kernel build, the toolchain image, debootstrap, an upload), shown where
a person can read it: a bar redrawn in place on a terminal, a plain line every minute in a CI log.

Work is counted in units that its own output marks (kbuild prints one line per object it makes), and
the total is estimated from the last time the same work ran to its end, remembered in a small file.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import TextIO

from .artifacts.files import write_atomically

# Kbuild's quiet output: two spaces, a tag in capitals (CC, LD [M], RUSTC L, ...), the target.
KBUILD_UNIT = re.compile(rb"^  [A-Z][A-Z0-9_]*(?: \[M\]| [A-Z])? +\S")
BAR_WIDTH = 24


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def size(count: float) -> str:
    return f"{count / 2**20:.1f} MiB"


class Progress:
    """Units done of an expected total. `mode`: "bar" (a terminal), "lines" (a log), or "off"."""

    def __init__(
        self,
        label: str,
        unit: str = "objects",
        expected: int | None = None,
        mode: str = "lines",
        pattern: re.Pattern[bytes] | None = KBUILD_UNIT,
        every: float = 60.0,
        out: TextIO | None = None,
        render=str,
    ):
        self.label, self.unit, self.expected, self.mode = label, unit, expected, mode
        self.pattern, self.every, self.render = pattern, every, render
        self.out = out or sys.stdout
        self.done = 0
        self.started = time.monotonic()
        self._shown_at = 0.0 if mode == "bar" else self.started
        self._partial = b""

    @staticmethod
    def mode_for(echo: bool, plain: bool = False, out: TextIO | None = None) -> str:
        """A bar on a terminal, plain lines elsewhere or when asked (--quiet, --verbose), nothing when silent."""
        if not echo:
            return "off"
        stream = out or sys.stdout
        return "lines" if plain or not stream.isatty() else "bar"

    def feed(self, chunk: bytes) -> None:
        """Output of the work: each whole line the pattern matches is a unit done."""
        if self.pattern is None:
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        self.advance(sum(1 for line in lines if self.pattern.match(line)))

    def advance(self, units: int = 1) -> None:
        self.done += units
        self._maybe_show()

    def set(self, done: int, expected: int | None = None) -> None:
        self.done = done
        self.expected = expected if expected is not None else self.expected
        self._maybe_show()

    def _maybe_show(self) -> None:
        now = time.monotonic()
        if self.mode == "off" or now - self._shown_at < (0.25 if self.mode == "bar" else self.every):
            return
        self._shown_at = now
        self._show(now)

    def describe(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.started
        done, unit = self.render(self.done), f" {self.unit}" if self.unit else ""
        if not self.expected:
            return f"{self.label}: {done}{unit}, {duration(elapsed)} (no estimate yet: first run)"
        fraction = min(self.done / self.expected, 1.0)
        left = f", about {duration(elapsed * (1 - fraction) / fraction)} left" if 0 < fraction < 1 else ""
        return f"{self.label}: {done} of ~{self.render(self.expected)}{unit} ({fraction:.0%}), {duration(elapsed)}{left}"

    def _show(self, now: float) -> None:
        text = self.describe(now)
        if self.mode == "bar":
            filled = int(BAR_WIDTH * min(self.done / self.expected, 1.0)) if self.expected else 0
            bar = "#" * filled + "-" * (BAR_WIDTH - filled) if self.expected else ""
            self.out.write(f"\r\033[K  [{bar}] {text}" if bar else f"\r\033[K  {text}")
        else:
            self.out.write(f"  {text}\n")
        self.out.flush()

    def finish(self) -> None:
        """The last word: a bar ends its line; a log gets a final count when the work took a while."""
        if self.mode == "bar":
            self._show(time.monotonic())
            self.out.write("\n")
            self.out.flush()
        elif self.mode == "lines" and time.monotonic() - self.started >= self.every:
            self._show(time.monotonic())


class Remembered:
    """The totals of work that ran to its end, by name, in one small JSON file: the next estimate."""

    def __init__(self, file: Path):
        self.file = file

    def _all(self) -> dict:
        try:
            data = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, name: str) -> int | None:
        value = self._all().get(name)
        return value if isinstance(value, int) and value > 0 else None

    def put(self, name: str, total: int) -> None:
        if total > 0:
            write_atomically(self.file, json.dumps({**self._all(), name: total}).encode())
