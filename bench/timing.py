"""The one way the benchmarks time things: the median of a few rounds, in seconds; and the machine's CPU."""

import os
import statistics
import time
from pathlib import Path


def median_seconds(action, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def machine_busy_seconds() -> float:
    """CPU time all processes spent, from /proc/stat (user to steal, without idle and iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
