"""A labgrid lab on 127.0.0.1 for the tests: a coordinator, an exporter exporting one board (a
NetworkService, a raw TCP serial console, and an HTTP relay as its power switch), and labgrid-client as
lab users run it."""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

PLACE = "bench-1"


def labgrid_tool(name: str) -> list[str]:
    """A labgrid command of the installed labgrid, run by this Python."""
    return [sys.executable, "-c", f"import sys; from labgrid.remote.{name} import main; sys.exit(main())"]


def wait_for_port(port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


class Lab:
    """A coordinator and an exporter, and labgrid-client as another lab user would run it."""

    def __init__(self, folder: Path, ssh_port: int, user: str, console: str = "127.0.0.1:1", power_on=None):
        """`console`: the board's raw TCP console, host:port; `power_on`: what switching the relay on
        does (the virtual board's QMP reset), besides being recorded."""
        from sshd import free_port

        self.port = free_port()
        self.coordinator = f"127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.switched: list[str] = []  # what the power switch was told, in order
        self.power_switch = self.start_power_switch(power_on)
        console_host, console_port = console.rsplit(":", 1)
        self.start_coordinator(folder)
        exported = folder / "exporter.yaml"
        exported.write_text(
            "board:\n"
            f"  NetworkService: {{address: 127.0.0.1, port: {ssh_port}, username: {user}}}\n"
            f"  NetworkSerialPort: {{host: {console_host}, port: {console_port}, protocol: raw}}\n"
            "  NetworkPowerPort:\n"
            "    model: simplerest\n"
            f"    host: 'http://127.0.0.1:{self.power_switch.server_port}/relay/{{index}}/{{value}}'\n"
            "    index: 0\n"
        )
        self.processes.append(
            subprocess.Popen(
                labgrid_tool("exporter") + ["-c", self.coordinator, "-n", "exporter", "--hostname", "127.0.0.1", str(exported)],
                stdout=open(folder / "exporter.log", "w"),
                stderr=subprocess.STDOUT,
            )
        )
        self.wait_for_resource()
        self.client("-p", PLACE, "create")
        self.client("-p", PLACE, "add-match", "exporter/board/*")

    def start_power_switch(self, power_on):
        """An HTTP relay as labgrid's `simplerest` power model drives one: it records each request."""
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        switched = self.switched

        class Relay(BaseHTTPRequestHandler):
            def do_GET(self):
                switched.append(self.path)
                if power_on is not None and self.path.endswith("/1"):
                    power_on()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *arguments):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def start_coordinator(self, folder: Path) -> None:
        self.coordinator_process = subprocess.Popen(
            labgrid_tool("coordinator") + ["-l", self.coordinator],
            cwd=folder,  # where it keeps its places
            stdout=open(folder / "coordinator.log", "w"),
            stderr=subprocess.STDOUT,
        )
        self.processes.append(self.coordinator_process)
        wait_for_port(self.port)

    def wait_for_resource(self, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if "exporter/board/NetworkService" in self.client("resources").stdout:
                return
            time.sleep(0.3)
        raise AssertionError("the exporter's NetworkService never reached the coordinator")

    def client(self, *arguments: str, user: str | None = None) -> subprocess.CompletedProcess:
        env = os.environ | {"LG_COORDINATOR": self.coordinator}
        if user:
            env |= {"LG_USERNAME": user, "LG_HOSTNAME": "another-bench"}
        return subprocess.run(labgrid_tool("client") + list(arguments), env=env, capture_output=True, text=True, timeout=30)

    def holder(self) -> str:
        """Who holds the place, as `labgrid-client who` shows it ("" when nobody)."""
        rows = [line.split() for line in self.client("who").stdout.splitlines()[1:]]
        return next((f"{row[1]}/{row[0]}" for row in rows if len(row) >= 3 and row[2] == PLACE), "")

    def stop(self) -> None:
        self.power_switch.shutdown()
        self.power_switch.server_close()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
