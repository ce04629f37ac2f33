"""The one way the benchmarks time things: the median of a few rounds, in seconds."""

import statistics
import time


def median_seconds(action, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
