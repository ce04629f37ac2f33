"""What progress reporting costs a build: a real kernel build's log (by default qemu-arm64's, or the file
named), replayed in the chunks Docker delivers, through a step's Tee with a progress bar against the same
Tee without one, as a ratio, and the cost per 10,000 objects. The log is repeated to beagleplay's size
(about 8x qemu-arm64's objects). `python3 bench/progress.py [LOG]`."""

import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import median_seconds  # noqa: E402

from crossboard import PROJECT_ROOT  # noqa: E402
from crossboard.progress import KBUILD_UNIT, Progress  # noqa: E402
from crossboard.toolchain.stream import Tee  # noqa: E402

ROUNDS = 5
CHUNK = 4096  # bytes per chunk: what docker's exec stream gives at most, the worst case for the parser
SCALE = 8


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else PROJECT_ROOT / "out/qemu-arm64/logs/kernel.log"
    log = path.read_bytes()
    objects = sum(1 for line in log.splitlines() if KBUILD_UNIT.match(line))
    if objects < 1000:
        sys.exit(f"{path} tells of {objects} objects: the log of an incremental build; name the log of a full one")
    log *= SCALE
    chunks = [log[i : i + CHUNK] for i in range(0, len(log), CHUNK)]

    def replay(progress_mode: str | None):
        def run():
            progress = (
                Progress("kernel", expected=len(log.splitlines()), mode=progress_mode, out=io.StringIO(), every=0.0)
                if progress_mode
                else None
            )
            with (
                tempfile.TemporaryDirectory() as scratch,
                Tee(Path(scratch) / "kernel.log", echo=False, progress=progress) as tee,
            ):  # as a step writes its log
                for chunk in chunks:
                    tee.write(chunk)

        return run

    plain = median_seconds(replay(None), ROUNDS)
    with_bar = median_seconds(replay("bar"), ROUNDS)
    print(f"a {len(log) >> 10} KiB kernel log ({SCALE * objects} objects) in {len(chunks)} chunks, median of {ROUNDS}:")
    print(
        f"  Tee alone {plain * 1000:.0f} ms, Tee with a progress bar {with_bar * 1000:.0f} ms: "
        f"ratio {with_bar / plain:.2f}x; progress costs {(with_bar - plain) / (SCALE * objects) * 1e7:.0f} ms "
        "per 10,000 objects"
    )


if __name__ == "__main__":
    main()
