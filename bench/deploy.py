"""Deploy speed against OpenSSH's own tools on real sshd servers on 127.0.0.1 (run as root):
upload throughput of a 20 MB artifact against scp (by SFTP, and as an exec stream to a server without
SFTP), bytes of an unchanged redeploy, 8 boards against 1."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import machine_busy_seconds, median_seconds  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes import fake_built_board  # noqa: E402
from sshd import SUDO_USER, SshServer, free_port, make_key, prepare_lab  # noqa: E402

from crossboard.board.schema import Connection  # noqa: E402
from crossboard.deploy.run import DeployOptions, deploy_many  # noqa: E402
from crossboard.progress import Progress  # noqa: E402
from crossboard.remote.access import Access  # noqa: E402
from crossboard.remote.connection import connect  # noqa: E402
from crossboard.remote.transfer import Upload, push  # noqa: E402

ROUNDS = 3
SIZE = 20 * 2**20


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="crossboard-bench-"))
    remote_root = f"/tmp/crossboard-bench-{uuid.uuid4().hex}"
    access = Access(folder / "known_hosts", trust_new_host=True)
    key = prepare_lab(folder)
    servers = [SshServer(free_port(), make_key(folder / "host_key")).start(folder) for _ in range(8)]
    servers.append(SshServer(free_port(), make_key(folder / "host_key"), sftp=False).start(folder))
    try:
        artifact = folder / "artifact.bin"
        artifact.write_bytes(os.urandom(SIZE))
        digest = hashlib.sha256(artifact.read_bytes()).hexdigest()

        def upload_seconds(server) -> tuple[str, float]:
            connection = Connection(host="127.0.0.1", port=server.port, user=SUDO_USER, key=str(key), sudo=True)
            with connect(connection, known_hosts=access.known_hosts, trust_new_host=True) as board:

                def ours():
                    push(board, f"{remote_root}/upload-{uuid.uuid4().hex}", [Upload(artifact, "artifact.bin", digest)])

                return board.transport_name, median_seconds(ours, ROUNDS)

        uploads = [upload_seconds(servers[0]), upload_seconds(servers[-1])]
        connection = Connection(host="127.0.0.1", port=servers[0].port, user=SUDO_USER, key=str(key), sudo=True)
        with connect(connection, known_hosts=access.known_hosts, trust_new_host=True) as board:
            sent = Progress("redeploy", mode="off", pattern=None)
            push(board, f"{remote_root}/again", [Upload(artifact, "artifact.bin", digest)])
            push(board, f"{remote_root}/again", [Upload(artifact, "artifact.bin", digest)], progress=sent)
            board.run(f"mkdir -p {remote_root}/scp")

        def scp():
            subprocess.run(
                [
                    "scp",
                    "-q",
                    "-i",
                    str(key),
                    "-P",
                    str(servers[0].port),
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    f"UserKnownHostsFile={folder / 'scp_known_hosts'}",
                    str(artifact),
                    f"{SUDO_USER}@127.0.0.1:{remote_root}/scp/",
                ],
                check=True,
            )

        scp_seconds = median_seconds(scp, ROUNDS)
        for how, ours_seconds in uploads:
            print(
                f"upload 20 MiB by {how}, median of {ROUNDS}: crossboard {SIZE / ours_seconds / 1e6:.0f} MB/s "
                f"(sha256-checked, atomic), scp {SIZE / scp_seconds / 1e6:.0f} MB/s: "
                f"ratio {scp_seconds / ours_seconds:.2f}x (target >= 0.9x)"
            )
        print(f"unchanged redeploy: {sent.done} bytes sent (target 0)")

        boards = [
            fake_built_board(
                folder / "project",
                folder / "out",
                f"b{i}",
                server.port,
                SUDO_USER,
                key,
                f"{remote_root}/b{i}-{uuid.uuid4().hex}",
                extra_files={"apps/blob": os.urandom(2**20)},
            )
            for i, server in enumerate(servers[:8])
        ]
        options = DeployOptions(echo=False)

        def fresh(selected):
            shutil.rmtree(remote_root, ignore_errors=True)  # the servers are this machine: every byte goes again
            deploy_many(selected, folder / "out", options, access)

        one = median_seconds(lambda: fresh(boards[:1]), ROUNDS)
        busy, ours = machine_busy_seconds(), time.process_time()
        eight = median_seconds(lambda: fresh(boards), ROUNDS)
        busy, ours = (machine_busy_seconds() - busy) / ROUNDS, (time.process_time() - ours) / ROUNDS
        print(
            f"deploy (connect, 1 MiB + app sent, app run), median of {ROUNDS}: 1 board {one:.2f} s, "
            f"8 boards in parallel {eight:.2f} s: ratio {eight / one:.2f}x (target <= 1.5x)"
        )
        # the 8 servers run on the same cores as crossboard: show who spends the CPU
        print(
            f"  8 boards: the machine's {os.cpu_count()} cores busy for {busy:.2f} CPU-s a round, "
            f"crossboard's own share {ours:.2f} CPU-s"
        )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(remote_root, ignore_errors=True)


if __name__ == "__main__":
    main()
