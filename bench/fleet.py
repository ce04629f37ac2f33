"""A fleet measured as it runs (run as root): 8 boards, each an sshd in a network namespace of its own
behind a link with a round-trip latency (bench/delay_link, built here with cargo), deployed in parallel
against one board, at each latency; and crossboard's own CPU per board per deploy, which real boards do
not share.

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
DELAY_LINK = HERE / "delay_link/target/release/delay_link"


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
        assert server.process is not None
        self.sshd_pid = server.process.pid  # `ip netns exec` execs sshd in its own process too
        link = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.namespace,
                str(DELAY_LINK),
                self.address,
                str(LINK_PORT),
                str(SSH_PORT),
                str(round_trip_ms),
            ],
            stdin=subprocess.PIPE,  # the link ends when this ends: closing its stdin stops it
            stdout=subprocess.PIPE,
            text=True,
        )
        self.link_pid = link.pid  # `ip netns exec` runs the link in its own process
        assert link.stdin is not None
        stack.callback(link.wait, 10)
        stack.callback(link.stdin.close)
        assert link.stdout is not None and link.stdout.readline().strip() == "ready"


def measure(round_trip_ms: float, folder: Path, key: Path) -> tuple[float, float, float, float, float, float]:
    """(1 board's deploy seconds, 8 boards' in parallel; per board per deploy, CPU-s of crossboard, of
    the whole machine, of the links and of the boards: their sshd's sessions, shells and apps)."""
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
        links_pids, sshd_pids = [link.link_pid for link in links], [link.sshd_pid for link in links]
        cpu, busy = time.process_time(), machine_busy_seconds()
        carried, served = cpu_seconds(links_pids), cpu_seconds(sshd_pids, of_children=True)
        eight = median_seconds(lambda: fresh(loaded), ROUNDS)
        deploys = ROUNDS * BOARDS
        cpu, busy = (time.process_time() - cpu) / deploys, (machine_busy_seconds() - busy) / deploys
        carried = (cpu_seconds(links_pids) - carried) / deploys
        served = (cpu_seconds(sshd_pids, of_children=True) - served) / deploys
    return one, eight, cpu, busy, carried, served


def cpu_seconds(pids: list[int], of_children: bool = False) -> float:
    """CPU seconds the processes have spent (/proc/PID/stat's utime and stime), or with `of_children`
    their ended children (cutime and cstime: an sshd's sessions, each with its shells and programs)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        first = 13 if of_children else 11
        ticks += int(fields[first]) + int(fields[first + 1])
    return ticks / os.sysconf("SC_CLK_TCK")


def build_delay_link() -> None:
    """The delay line, compiled: its CPU shares the machine with what it measures (no crates needed)."""
    manifest = HERE / "delay_link/Cargo.toml"
    subprocess.run(["cargo", "build", "--release", "--offline", "--quiet", "--manifest-path", str(manifest)], check=True)


def main() -> None:
    build_delay_link()
    latencies = [float(value) for value in sys.argv[1:]] or [0.0, 1.0, 20.0]
    folder = Path(tempfile.mkdtemp(prefix="crossboard-fleet-"))
    try:
        key = prepare_lab(folder)
        for round_trip_ms in latencies:
            one, eight, cpu, busy, carried, served = measure(round_trip_ms, folder, key)
            target = f" (target <= {TARGET}x)" if round_trip_ms == 20 else ""
            print(
                f"round trip {round_trip_ms:g} ms, median of {ROUNDS}: 1 board {one:.2f} s, {BOARDS} boards in parallel "
                f"{eight:.2f} s: ratio {eight / one:.2f}x{target}; per board per deploy, crossboard's own CPU "
                f"{cpu * 1000:.0f} ms; the machine's {busy * 1000:.0f} ms on its {os.cpu_count()} cores, of which "
                f"the boards' SSH sessions (sshd, shells, app) {served * 1000:.0f} ms and the delaying links "
                f"{carried * 1000:.0f} ms",
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
