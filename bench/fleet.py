"""A fleet measured as it runs (run as root): 8 boards, each an sshd in a network namespace of its own
behind a link with a round-trip latency (bench/delay_link.py), deployed in parallel against one
board, at each latency; and crossboard's own CPU per board per deploy, which real boards do not share.

    python3 bench/fleet.py [ROUND_TRIP_MS ...]    (default: 0 1 20)
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from fakes import fake_built_board  # noqa: E402
from sshd import SUDO_USER, SshServer, make_key, prepare_lab  # noqa: E402
from timing import machine_busy_seconds, median_seconds  # noqa: E402

from crossboard.deploy.run import DeployOptions, deploy_many  # noqa: E402
from crossboard.remote.access import Access  # noqa: E402

BOARDS = 8
ROUNDS = 5
SSH_PORT = 22  # each board's sshd, on its namespace's loopback
LINK_PORT = 2222  # the delayed link, on the namespace's veth address
TARGET = 1.3  # 8 boards against 1 at 20 ms round trip


def ip(*arguments: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, "ip", *arguments], check=True)


class Board:
    """A namespace with a veth link to this one: 10.201.N.1 here, 10.201.N.2 there."""

    def __init__(self, index: int, folder: Path, round_trip_ms: float, stack: ExitStack):
        self.namespace = f"cbfleet-{uuid.uuid4().hex[:6]}"
        self.address = f"10.201.{index}.2"
        here, there = f"cbf{index}h{self.namespace[-4:]}", f"cbf{index}n{self.namespace[-4:]}"
        ip("netns", "add", self.namespace)
        stack.callback(subprocess.run, ["ip", "netns", "del", self.namespace], check=False)
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", self.namespace)
        ip("addr", "add", f"10.201.{index}.1/24", "dev", here)
        ip("link", "set", here, "up")
        ip("addr", "add", f"{self.address}/24", "dev", there, namespace=self.namespace)
        ip("link", "set", there, "up", namespace=self.namespace)
        ip("link", "set", "lo", "up", namespace=self.namespace)
        server = SshServer(SSH_PORT, make_key(folder / "host_key"), namespace=self.namespace).start(folder)
        stack.callback(server.stop)
        link = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.namespace,
                sys.executable,
                str(HERE / "delay_link.py"),
                self.address,
                str(LINK_PORT),
                str(SSH_PORT),
                str(round_trip_ms),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.link_pid = link.pid  # `ip netns exec` runs the link in its own process
        stack.callback(link.wait, 10)
        stack.callback(link.terminate)
        assert link.stdout is not None and link.stdout.readline().strip() == "ready"


def measure(round_trip_ms: float, folder: Path, key: Path) -> tuple[float, float, float, float, float]:
    """(1 board's deploy seconds, 8 boards' in parallel; per board per deploy, CPU-s of crossboard, of
    the whole machine (crossboard, the boards' sshd and apps, the links) and of the links)."""
    remote_root = f"/tmp/crossboard-fleet-{uuid.uuid4().hex}"
    access = Access(folder / "known_hosts", trust_new_host=True)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, remote_root, True)
        links = [Board(index, folder, round_trip_ms, stack) for index in range(BOARDS)]
        boards = []
        for index, link in enumerate(links):
            board = fake_built_board(
                folder / "project",
                folder / "out",
                f"b{index}",
                LINK_PORT,
                SUDO_USER,
                key,
                f"{remote_root}/b{index}",
                extra_files={"apps/blob": os.urandom(2**20)},
            )
            board_file = board.file
            board_file.write_text(board_file.read_text().replace("host: 127.0.0.1", f"host: {link.address}"))
            boards.append(board_file.stem)
        from crossboard.board.load import load_board

        loaded = [load_board(name, folder / "project/boards") for name in boards]
        options = DeployOptions(echo=False)

        def fresh(selected):
            shutil.rmtree(remote_root, ignore_errors=True)  # the boards share this machine's disk: every byte goes again
            deploy_many(selected, folder / "out", options, access)

        fresh(loaded)  # host keys learned, the namespaces' sshd up
        one = median_seconds(lambda: fresh(loaded[:1]), ROUNDS)
        cpu, busy, carried = time.process_time(), machine_busy_seconds(), links_cpu(links)
        eight = median_seconds(lambda: fresh(loaded), ROUNDS)
        deploys = ROUNDS * BOARDS
        cpu, busy = (time.process_time() - cpu) / deploys, (machine_busy_seconds() - busy) / deploys
        carried = (links_cpu(links) - carried) / deploys
    return one, eight, cpu, busy, carried


def links_cpu(links: list[Board]) -> float:
    """CPU seconds the delaying links have spent (/proc/PID/stat's utime and stime)."""
    ticks = 0
    for link in links:
        fields = Path(f"/proc/{link.link_pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    latencies = [float(value) for value in sys.argv[1:]] or [0.0, 1.0, 20.0]
    folder = Path(tempfile.mkdtemp(prefix="crossboard-fleet-"))
    try:
        key = prepare_lab(folder)
        for round_trip_ms in latencies:
            one, eight, cpu, busy, carried = measure(round_trip_ms, folder, key)
            target = f" (target <= {TARGET}x)" if round_trip_ms == 20 else ""
            print(
                f"round trip {round_trip_ms:g} ms, median of {ROUNDS}: 1 board {one:.2f} s, {BOARDS} boards in parallel "
                f"{eight:.2f} s: ratio {eight / one:.2f}x{target}; per board per deploy, crossboard's own CPU "
                f"{cpu * 1000:.0f} ms; the machine's {busy * 1000:.0f} ms on its {os.cpu_count()} cores, of which "
                f"the delaying links {carried * 1000:.0f} ms, the boards' sshd and app the rest",
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
