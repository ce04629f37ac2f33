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
PLAN = re.compile(r"^(\s*)1\.\.(\d+)\s*$")
MAX_DEPTH = 8  # KUnit nests two or three levels
MAX_RESULTS = 20_000  # the kernel crate's doctests are about 400
TOO_DEEP = f"KTAP nested deeper than {MAX_DEPTH} levels: the rest of the log was not read"
TOO_MANY = f"more than {MAX_RESULTS} KTAP results: the rest of the log was not read"


@dataclass(frozen=True)
class KunitResult:
    suite: str  # the subtests it is in, outermost first, joined by dots
    test: str  # "" for a suite that reported only its own result (it failed before any case ran)
    status: str  # ok, failed or skipped
    reason: str = ""  # a skipped test's reason

    @property
    def name(self) -> str:
        return f"{self.suite}.{self.test}" if self.test else self.suite


@dataclass
class _Subtest:
    indent: int
    name: str
    path: str  # the names of the subtests it is in and its own, joined by dots
    seen: int = 0  # results reported inside it
    plan: int | None = None  # its `1..N` line's N


def parse(lines: list[str]) -> list[KunitResult]:
    """Linear in the log and bounded, whatever the log holds: subtests nest at most MAX_DEPTH deep and
    at most MAX_RESULTS results are read (a log past either is one failed result saying so). A suite
    whose results stop before its plan's count, or before its own result line, is failed as incomplete;
    a `# Subtest:` line that is not inside the open one ends those it cannot belong to."""
    results: list[KunitResult] = []
    open_subtests: list[_Subtest] = []
    for raw in lines:
        if len(results) >= MAX_RESULTS:
            results.append(KunitResult(open_subtests[0].path if open_subtests else "ktap", "", "failed", TOO_MANY))
            return results
        line = DMESG_PREFIX.sub("", raw)
        if match := SUBTEST.match(line):
            if not _open(open_subtests, len(match[1]), match[2], results):
                return results
        elif open_subtests and (match := PLAN.match(line)) and len(match[1]) == open_subtests[-1].indent:
            open_subtests[-1].plan = int(match[2])
        elif open_subtests and (match := RESULT.match(line)):
            _result(open_subtests, results, len(match[1]), match)
    while open_subtests:  # the log ended inside them
        _close(open_subtests, results, None, "")
    return results


def _open(open_subtests: list[_Subtest], indent: int, name: str, results: list[KunitResult]) -> bool:
    """A new subtest, inside the open ones it is indented under; False when that is too deep to read on."""
    while open_subtests and indent <= open_subtests[-1].indent:  # not inside it: it never closed
        _close(open_subtests, results, None, "")
    if len(open_subtests) >= MAX_DEPTH:
        results.append(KunitResult(open_subtests[0].path, "", "failed", TOO_DEEP))
        return False
    parent = open_subtests[-1].path + "." if open_subtests else ""
    open_subtests.append(_Subtest(indent, name, parent + name))
    return True


def _result(open_subtests: list[_Subtest], results: list[KunitResult], indent: int, match: re.Match) -> None:
    verdict, name, skip, reason = match[2], match[3], match[4], match[5] or ""
    status = "skipped" if skip else ("ok" if verdict == "ok" else "failed")
    innermost = open_subtests[-1]
    if indent < innermost.indent and name == innermost.name:  # the subtest's own line closes it
        _close(open_subtests, results, status, reason)
    elif indent == innermost.indent:
        results.append(KunitResult(innermost.path, name, status, reason))
        innermost.seen += 1


def _close(open_subtests: list[_Subtest], results: list[KunitResult], status: str | None, reason: str) -> None:
    """The innermost subtest ends: with its own result line (`status`), or without one (None)."""
    subtest = open_subtests.pop()
    if subtest.seen == 0 and status is not None:
        results.append(KunitResult(subtest.path, "", status, reason))
    elif subtest.seen < (subtest.plan or 0) or (status is None and (subtest.seen or subtest.plan)):
        results.append(KunitResult(subtest.path, "", "failed", _incomplete(subtest, status is None)))
    if open_subtests:
        open_subtests[-1].seen += 1


def _incomplete(subtest: _Subtest, unclosed: bool) -> str:
    counted = f"{subtest.seen} of {subtest.plan} results" if subtest.plan is not None else f"{subtest.seen} results"
    return f"incomplete: {counted}" + (", and no result line of its own" if unclosed else "")


def summary(results: list[KunitResult]) -> list[tuple[str, int, int, int]]:
    """(suite, ok, failed, skipped) per suite, in the order the suites first reported."""
    counts: dict[str, list[int]] = {}
    for result in results:
        row = counts.setdefault(result.suite, [0, 0, 0])
        row[("ok", "failed", "skipped").index(result.status)] += 1
    return [(suite, *row) for suite, row in counts.items()]  # type: ignore[misc]
