"""Apps that are services: the board-side scripts that start, wait for, check and stop one, run here by
this machine's own sh (as a board's sh runs them), and their parsers from fixtures. Seconds, no root."""

import socket
import subprocess
import time
from pathlib import Path

import pytest

from crossboard.board.schema import App
from crossboard.deploy.actions import parse_service_stop, service_start_problem, start_service, stop_service
from crossboard.remote.connection import Result

pytestmark = pytest.mark.fast


class LocalBoard:
    """A Session that runs its commands with this machine's sh, in place of a board's."""

    def run(self, command: str, *, privileged: bool = False, stdin: bytes | None = None, timeout: float = 120) -> Result:
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)
        return Result(done.returncode, done.stdout, done.stderr)


def service(tmp_path: Path, script: str, ready: dict, timeout: int = 5, **more) -> tuple[App, str]:
    binary = tmp_path / "apps/svc"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text(f"#!/bin/sh\n{script}\n")
    binary.chmod(0o755)
    return App(path="apps/svc", timeout=timeout, service={"ready": ready, **more}, **{"expect_stdout": ["up"]}), str(binary)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def live_in_group(group: str) -> list[str]:
    """The processes of a process group that still run (a killed one this sandbox's init has not reaped
    yet is a zombie, and not counted)."""
    listing = subprocess.run(["ps", "-o", "stat=,pid=", "-g", group], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if not line.strip().startswith("Z")]


def running(pid_file: Path) -> bool:
    return subprocess.run(["kill", "-0", pid_file.read_text().strip()], capture_output=True).returncode == 0


def test_a_service_ready_by_its_line_is_checked_and_stopped_with_what_it_started(tmp_path):
    app, binary = service(tmp_path, "echo up; sleep 60 & wait", {"line": "up"})
    board = LocalBoard()
    report = start_service(board, str(tmp_path), binary, "svc", app)
    assert report.error == "" and report.ready_seconds is not None and report.ready_seconds < 5
    pid_file = tmp_path / "services/svc.pid"
    pid = pid_file.read_text().strip()
    stop_service(board, str(tmp_path), report, app)
    assert report.ok and not report.kept and report.stdout == "up\n" and report.missing == []
    assert live_in_group(pid) == []  # the sleep it started went with it


def test_a_service_ready_by_its_port(tmp_path):
    port = free_port()
    server = f'import socket, time; s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen(); print("up", flush=True)'
    server += "; time.sleep(60)"
    listen = f"exec python3 -c '{server}'"
    app, binary = service(tmp_path, listen, {"port": port})
    board = LocalBoard()
    report = start_service(board, str(tmp_path), binary, "svc", app)
    stop_service(board, str(tmp_path), report, app)
    assert report.ok, report


def test_a_service_that_never_gets_ready_or_ends_early_is_one_line_and_stopped(tmp_path):
    board = LocalBoard()
    app, binary = service(tmp_path, "echo up; sleep 60", {"port": free_port()}, timeout=1)
    late = start_service(board, str(tmp_path), binary, "svc", app)
    stop_service(board, str(tmp_path), late, app)
    assert late.error.startswith("not ready within 1 s (waiting for port ") and not late.ok
    assert not (tmp_path / "services/svc.pid").exists()  # stopped all the same

    app, binary = service(tmp_path, "echo broken >&2; exit 3", {"line": "up"})
    early = start_service(board, str(tmp_path), binary, "svc", app)
    stop_service(board, str(tmp_path), early, app)
    assert early.error == "exited with code 3 before it was ready (waiting for the line 'up')"
    assert early.exit_code == 3 and early.stderr == "broken\n"


def test_a_kept_service_runs_on_and_the_next_deploy_stops_it_first(tmp_path):
    board = LocalBoard()
    app, binary = service(tmp_path, "echo up; sleep 60", {"line": "up"}, keep_running=True)
    first = start_service(board, str(tmp_path), binary, "svc", app)
    stop_service(board, str(tmp_path), first, app)
    pid_file = tmp_path / "services/svc.pid"
    earlier = pid_file.read_text().strip()
    assert first.ok and first.kept and running(pid_file)
    second = start_service(board, str(tmp_path), binary, "svc", app)
    assert second.error == "" and pid_file.read_text().strip() != earlier
    assert subprocess.run(["kill", "-0", earlier], capture_output=True).returncode != 0
    stop_service(
        board, str(tmp_path), second, app.model_copy(update={"service": app.service.model_copy(update={"keep_running": False})})
    )
    time.sleep(0.1)
    assert not pid_file.exists()


@pytest.mark.parametrize(
    "word, problem",
    [
        ("ready\n", ""),
        ("late\n", "not ready within 5 s (waiting for port 80)"),
        ("exited 127\n", "exited with code 127 before it was ready (waiting for port 80)"),
        ("no-setsid\n", "could not be started: the board has no setsid (util-linux, or busybox's)"),
        ("sh: 1: cannot create /x/services/a.pid: Permission denied\n", "could not be started: sh: 1: cannot create"),
    ],
)
def test_what_the_start_script_says(word, problem):
    assert service_start_problem(word, App(path="a", timeout=5, service={"ready": {"port": 80}})).startswith(problem)


def test_what_the_stop_script_says():
    marker = "crossboard-m"
    assert parse_service_stop(f"running\n{marker}\nout 1\nout 2\n\n{marker}\nerr\n", marker) == (
        "running",
        "out 1\nout 2\n",
        "err\n",
    )
    assert parse_service_stop(f"exited 2\n{marker}\n\n{marker}\n", marker) == ("exited 2", "", "")


def test_a_service_says_how_it_gets_ready_once():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="give exactly one of port and line"):
        App(path="a", service={"ready": {"port": 80, "line": "up"}})


def test_a_service_that_ignores_sigterm_is_killed_with_what_it_started(tmp_path):
    app, binary = service(tmp_path, "trap '' TERM; echo up; sleep 60 & while :; do sleep 1; done", {"line": "up"})
    board = LocalBoard()
    report = start_service(board, str(tmp_path), binary, "svc", app)
    group = (tmp_path / "services/svc.pid").read_text().strip()
    stop_service(board, str(tmp_path), report, app)
    assert report.ok, report
    assert live_in_group(group) == []
