"""A real OpenSSH server on 127.0.0.1 for tests: its own host key, a free port, real users."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUDO_USER = "cbdeploy"  # NOPASSWD sudo
PLAIN_USER = "cbplain"  # no sudo


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_user(name: str, client_public_key: str, sudo: bool) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    # useradd locks the account ("!"), and sshd without PAM refuses even key logins to locked accounts.
    subprocess.run(["usermod", "-p", "*", name], check=True)
    home = Path(pwd.getpwnam(name).pw_dir)
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
    (home / ".ssh/authorized_keys").write_text(client_public_key)
    entry = Path(f"/etc/sudoers.d/crossboard-test-{name}")
    if sudo:
        entry.write_text(f"{name} ALL=(ALL) NOPASSWD: ALL\n")
        entry.chmod(0o440)
    else:
        entry.unlink(missing_ok=True)
    for path in (home / ".ssh", home / ".ssh/authorized_keys"):
        os.chown(path, pwd.getpwnam(name).pw_uid, pwd.getpwnam(name).pw_gid)


@dataclass
class SshServer:
    port: int
    host_key: Path
    sftp: bool = True  # without it, as dropbear without sftp-server: transfers go as an exec stream
    process: subprocess.Popen | None = None
    namespace: str | None = None  # a network namespace of the test's own to run in (127.0.0.1 there)

    def start(self, folder: Path) -> SshServer:
        config = folder / f"sshd_config_{self.port}"
        config.write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {self.host_key}\nPidFile none\n"
            "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n"
            + ("Subsystem sftp internal-sftp\n" if self.sftp else "")
            + "LogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        prefix = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        self.process = subprocess.Popen(
            [*prefix, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(folder / f"sshd_{self.port}.log", "ab"),
        )
        if not self.namespace:  # in a namespace, the client waits for it (connect's --wait)
            wait_for_banner(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def wait_for_banner(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"no SSH banner on 127.0.0.1:{port} within {seconds} s")


def make_key(path: Path) -> Path:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def prepare_lab(folder: Path) -> Path:
    """The client key and the two test users (one with NOPASSWD sudo) that every test server accepts."""
    client_key = make_key(folder / "client_key")
    public = (folder / "client_key.pub").read_text()
    ensure_user(SUDO_USER, public, sudo=True)
    ensure_user(PLAIN_USER, public, sudo=False)
    return client_key


ENGINE_USER = "cbengine"  # a lab's build account: in the docker group, nothing more


def docker_over_ssh(folder: Path, server: SshServer, client_key: Path) -> dict[str, str]:
    """The environment that reaches this machine's Docker engine as a remote one, through `server` as
    ENGINE_USER: docker's SSH transport reads ~/.ssh as the docker CLI does, so a home of its own (and
    crossboard's cache where it was, not in that home)."""
    ensure_user(ENGINE_USER, Path(f"{client_key}.pub").read_text(), sudo=False)
    subprocess.run(["usermod", "-aG", "docker", ENGINE_USER], check=True)
    home = folder / "engine-home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    kind, key = Path(f"{server.host_key}.pub").read_text().split()[:2]
    (home / ".ssh/known_hosts").write_text(f"[127.0.0.1]:{server.port} {kind} {key}\n")
    (home / ".ssh/config").write_text(f"Host 127.0.0.1\n  IdentityFile {client_key}\n")
    cache = os.environ.get("CROSSBOARD_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crossboard"
    )
    return {"HOME": str(home), "DOCKER_HOST": f"ssh://{ENGINE_USER}@127.0.0.1:{server.port}", "CROSSBOARD_CACHE": cache}
