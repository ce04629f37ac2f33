"""KUnit's results as the kernel log carries them (KTAP): each test ok, failed or skipped, by suite.

KUnit prints a suite as `# Subtest: NAME` and its cases' `ok N name` / `not ok N name` lines at the
same indentation, then the suite's own result line one level out; a parameterised case nests once
more the same way. The log lines may carry dmesg's `[  1.234567] ` prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DMESG_PREFIX = re.compile(r"^\[\s*\d+\.\d+\] ")
SUBTEST = re.compile(r"^(\s*)# Subtest: (\S+)")
RESULT = re.compile(r"^(\s*)(ok|not ok) \d+ (\S+)(?:\s+#\s*(SKIP)\b\s*(.*))?")


@dataclass(frozen=True)
class KunitResult:
    suite: str  # the subtests it is in, outermost first, joined by dots
    test: str  # "" for a suite that reported only its own result (it failed before any case ran)
    status: str  # ok, failed or skipped
    reason: str = ""  # a skipped test's reason

    @property
    def name(self) -> str:
        return f"{self.suite}.{self.test}" if self.test else self.suite


def parse(lines: list[str]) -> list[KunitResult]:
    results: list[KunitResult] = []
    open_subtests: list[tuple[int, str, int]] = []  # (indentation, name, results seen inside)
    for raw in lines:
        line = DMESG_PREFIX.sub("", raw)
        if match := SUBTEST.match(line):
            open_subtests.append((len(match[1]), match[2], 0))
            continue
        match = RESULT.match(line)
        if match is None or not open_subtests:
            continue
        indent, verdict, name, skip, reason = len(match[1]), match[2], match[3], match[4], match[5] or ""
        status = "skipped" if skip else ("ok" if verdict == "ok" else "failed")
        depth, innermost, seen = open_subtests[-1]
        if indent < depth and name == innermost:  # the subtest's own line closes it
            open_subtests.pop()
            if seen == 0:
                results.append(KunitResult(_path(open_subtests + [(depth, innermost, 0)]), "", status, reason))
            elif open_subtests:
                open_subtests[-1] = (*open_subtests[-1][:2], open_subtests[-1][2] + 1)
            continue
        if indent == depth:
            results.append(KunitResult(_path(open_subtests), name, status, reason))
            open_subtests[-1] = (depth, innermost, seen + 1)
    return results


def _path(subtests: list[tuple[int, str, int]]) -> str:
    return ".".join(name for _, name, _ in subtests)


def summary(results: list[KunitResult]) -> list[tuple[str, int, int, int]]:
    """(suite, ok, failed, skipped) per suite, in the order the suites first reported."""
    counts: dict[str, list[int]] = {}
    for result in results:
        row = counts.setdefault(result.suite, [0, 0, 0])
        row[("ok", "failed", "skipped").index(result.status)] += 1
    return [(suite, *row) for suite, row in counts.items()]  # type: ignore[misc]
