"""An SSH connection to a board with paramiko: ~/.ssh/config, agent and keys, strict host keys,
a bounded wait while the board boots, and commands with every value quoted."""

from __future__ import annotations

import base64
import glob
import hashlib
import logging
import os
import re
import select
import shlex
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from .. import PROJECT_ROOT
from ..board.schema import Connection
from ..errors import Cancelled, InfrastructureError, UserError

# paramiko logs each failed attempt with a traceback; retries are expected while a board boots, and
# what finally fails is reported as one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

WINDOW_BYTES = 8 << 20  # for file transfers: paramiko's default 2 MiB window halves loopback throughput
# Printed first by a privileged command: without it, sudo itself refused (it asks for a password).
ROOT_SHELL_STARTED = "crossboard-root-shell"
USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()
USER_SSH_CONFIG = Path("~/.ssh/config").expanduser()
INCLUDE = re.compile(r"^\s*include\s+(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Target:
    """Where to connect, after ~/.ssh/config has had its say."""

    name: str  # as the board file says it, for messages
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]
    proxy_command: str | None = None  # ProxyCommand, or ProxyJump as `ssh -W`: how labs reach their boards
    known_hosts_files: tuple[Path, ...] = ()  # UserKnownHostsFile, besides ~/.ssh/known_hosts

    @property
    def known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def read_ssh_config(path: Path, depth: int = 0) -> str:
    """The file's text with every `Include` replaced by the files it names (paramiko keeps the line
    but does not follow it); relative patterns are relative to ~/.ssh, as ssh does."""

    def included(match: re.Match) -> str:
        if depth >= 16:
            raise UserError(f"{path}: Include nests more than 16 deep")
        files = []
        try:
            patterns = shlex.split(match[1])  # as ssh reads it: "a path with spaces" is one
        except ValueError as error:
            raise UserError(f"{path}: Include {match[1].strip()}: {error}") from None
        for pattern in patterns:
            pattern = os.path.expanduser(pattern)
            full = pattern if os.path.isabs(pattern) else str(Path("~/.ssh").expanduser() / pattern)
            files += sorted(glob.glob(full))
        return "\n".join(read_ssh_config(Path(file), depth + 1) for file in files)

    try:
        return INCLUDE.sub(included, path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None


def resolve(connection: Connection, base_dir: Path = PROJECT_ROOT, ssh_config: Path | None = None) -> Target:
    """The board file's values win over ~/.ssh/config's, which win over the defaults. A relative
    key path is relative to the project (`base_dir`)."""
    host = connection.host
    if host is None:  # the labgrid place's NetworkService names it once the place is reserved (lab.py)
        place = connection.labgrid.place if connection.labgrid else "?"
        raise UserError(f"connection.labgrid.place {place}: not reserved, so no address to connect to")
    ssh_config = ssh_config or USER_SSH_CONFIG
    config = paramiko.SSHConfig.from_text(read_ssh_config(ssh_config)).lookup(host) if ssh_config.is_file() else {}
    try:
        port = connection.port or int(config.get("port", 22))
    except ValueError:
        raise UserError(f"{ssh_config}: Host {host}: Port {config.get('port')!r} is not a number") from None
    if not 1 <= port <= 65535:  # Python would dial it modulo 65536
        raise UserError(f"{ssh_config}: Host {host}: Port {port} is not a port (1-65535)")
    user = connection.user or config.get("user", "root")
    hostname = str(config.get("hostname", host))
    if connection.key:
        key_file = base_dir / Path(connection.key).expanduser()
        if not key_file.is_file():
            raise UserError(f"{host}: connection.key: no such file {key_file}")
        _check_key(key_file, host, "connection.key")
        keys = [connection.key]
    else:
        # ssh passes over IdentityFile entries that do not exist; so does crossboard
        keys = [key for key in config.get("identityfile", []) if Path(key).expanduser().is_file()]
        for key in keys:
            if not key.endswith(".pub"):  # a public key names one the agent holds, as ssh reads it
                _check_key(Path(key).expanduser(), host, f"{ssh_config}: IdentityFile")
    proxy = config.get("proxycommand")
    if config.get("proxyjump", "none").lower() != "none":
        jumps = config["proxyjump"].split(",")
        command = ["ssh", "-F", str(ssh_config), "-W", f"{hostname}:{port}"]
        command += ["-J", ",".join(jumps[:-1])] if len(jumps) > 1 else []
        proxy = shlex.join(command + [jumps[-1]])
    known = tuple(Path(file).expanduser() for file in config.get("userknownhostsfile", "").split())
    return Target(
        name=host,
        hostname=hostname,
        port=port,
        user=user,
        key_files=tuple(str(base_dir / Path(k).expanduser()) for k in keys),
        proxy_command=None if (proxy or "none").lower() == "none" else proxy,
        known_hosts_files=known,
    )


def _check_key(path: Path, host: str, named_by: str) -> None:
    """A key file paramiko cannot use is bad input at once, not a board that never answers."""
    try:
        paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, paramiko.UnknownKeyType, TypeError):
        # an encrypted key (cryptography says so with a TypeError), or a kind paramiko does not read (a
        # security key's): the agent may hold it
        pass
    except (OSError, paramiko.SSHException, ValueError) as error:
        raise UserError(f"{host}: {named_by}: {path} is not a private key paramiko can use ({error})") from None


def read_known_hosts(file: Path) -> tuple[list[tuple[list[str], paramiko.PKey]], set[bytes]]:
    """A known_hosts file's (hostnames, key) entries, and the keys it marks @revoked. @cert-authority
    lines (host certificates, which crossboard does not use) and lines it cannot read are passed over,
    as ssh does; a marker ends at any white space, as ssh reads it."""
    entries, revoked = [], set()
    for line in file.read_text(errors="replace").splitlines():
        marker, rest = (line.strip().split(None, 1) + [""])[:2] if line.lstrip().startswith("@") else ("", line)
        if marker == "@cert-authority" or not rest.strip() or rest.lstrip().startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(rest.strip())
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError):
            continue
        if entry is None or entry.key is None:
            continue
        if marker == "@revoked":
            revoked.add(entry.key.asbytes())
        elif not marker:
            entries.append((entry.hostnames, entry.key))
    return entries, revoked


def load_known_hosts(keys: paramiko.HostKeys, files: list[Path]) -> set[bytes]:
    """Every file's keys into `keys` but those any of them marks @revoked; the revoked keys."""
    read = [read_known_hosts(file) for file in files if file.is_file()]
    revoked = set().union(*(marked for _, marked in read))
    for entries, _ in read:
        for hostnames, key in entries:
            if key.asbytes() not in revoked:
                for name in hostnames:
                    keys.add(name, key.get_name(), key)
    return revoked


# A board that loses power or its link sends nothing, not even a reset: after this long without an answer
# the kernel gives up on the connection, so the command waiting on it ends in an error, not its timeout.
SILENT_BOARD_SECONDS = 30


def notice_a_silent_board(sock: socket.socket) -> None:
    """Probes while idle (keepalive) and a limit on unanswered data (paramiko's own keepalives are data,
    and unanswered data is retransmitted for minutes otherwise)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, SILENT_BOARD_SECONDS * 1000)


class Cancellation:
    """Lets one thread stop the SSH work of others at once: a connect() still waiting for its board
    gives up, and every session opened under it is closed, which ends the commands running there."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._sessions: list[Session] = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def track(self, session: Session) -> None:
        with self._lock:
            self._sessions.append(session)
            if self.event.is_set():
                session.close()
                raise Cancelled("interrupted")

    def cancel(self) -> None:
        self.event.set()
        with self._lock:
            for session in self._sessions:
                session.close()


class _RecordNewKey(paramiko.MissingHostKeyPolicy):
    """An unknown host key is refused, or with trust-new recorded in the project's known_hosts; a key
    marked @revoked is refused before anything else, before logging in."""

    def __init__(self, trust_new: bool, known_hosts: Path, revoked: set[bytes]):
        self.trust_new = trust_new
        self.known_hosts = known_hosts
        self.revoked = revoked

    def missing_host_key(self, client, hostname, key):
        fingerprint = f"{key.get_name()} SHA256:{_fingerprint(key)}"
        if key.asbytes() in self.revoked:
            raise UserError(f"{hostname}: its host key {fingerprint} is marked @revoked in known_hosts: not connecting")
        if not self.trust_new:
            raise UserError(
                f"{hostname}: unknown host key {fingerprint}; if that is the board, rerun with "
                "--trust-new-host (or set connection.host_key_policy: trust-new)"
            )
        try:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(self.known_hosts, "a") as handle:
                handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        except OSError as error:  # not a dead board: waiting would not help
            raise UserError(f"{self.known_hosts}: cannot record the new host key of {hostname} ({error.strerror})") from None
        print(
            f"crossboard: {hostname}: trusting the new host key {fingerprint}, recorded in {self.known_hosts}",
            file=sys.stderr,
            flush=True,
        )
        client.get_host_keys().add(hostname, key.get_name(), key)


def _fingerprint(key: paramiko.PKey) -> str:
    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


class Session:
    """One SSH session with one board, reused for everything deploy does there."""

    def __init__(self, target: Target, client: paramiko.SSHClient, sudo: bool):
        self.target = target
        self.client = client
        self.sudo = sudo
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_refused = False

    def sftp(self) -> paramiko.SFTPClient | None:
        """The server's SFTP subsystem, opened on first use; None when it has none (dropbear without
        sftp-server, say)."""
        if self._sftp is None and not self._sftp_refused:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self.client.get_transport(), window_size=WINDOW_BYTES)
            except paramiko.SSHException:
                self._sftp_refused = True
        return self._sftp

    @property
    def transport_name(self) -> str:
        """How files go to this board: `sftp` or `exec stream`."""
        return "sftp" if self.sftp() else "exec stream"

    def run(self, command: str, *, privileged: bool = False, stdin: bytes | None = None, timeout: float = 120) -> Result:
        """Run a shell command line on the board; callers quote every value with shlex.quote.
        privileged: as root, through sudo -n when connection.sudo is set; UserError when sudo wants a
        password (found on the way, so no round trip of its own)."""
        through_sudo = privileged and self.sudo
        if through_sudo:
            command = f"sudo -n sh -c {shlex.quote(f'echo {ROOT_SHELL_STARTED}; {command}')}"
        try:
            code, stdout, stderr = self._exchange(command, stdin, timeout)
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise InfrastructureError(f"{self.target.name}: the connection was lost ({error or type(error).__name__})") from None
        output = stdout.decode(errors="replace")
        if through_sudo:
            before, marker, output = output.partition(f"{ROOT_SHELL_STARTED}\n")
            if code == 127 and not marker:
                raise UserError(
                    f"{self.target.name}: sudo is not installed on the board: install it, or log in as "
                    "root (connection.user: root, connection.sudo: false)"
                )
            if before or not marker:
                user = self.target.user
                raise UserError(
                    f"{self.target.name}: {user} cannot run sudo without a password: on the board add "
                    f"'{user} ALL=(ALL) NOPASSWD: ALL' to /etc/sudoers.d/crossboard"
                )
        return Result(code, output, stderr.decode(errors="replace"))

    def _exchange(self, command: str, stdin: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
        """Exit code, stdout and stderr, both streams read as they come: a command that fills one
        while the other is read would otherwise wait forever."""
        deadline = time.monotonic() + timeout
        channel = self.channel(timeout=timeout)
        with channel:
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin)
                channel.shutdown_write()
            stdout, stderr = bytearray(), bytearray()
            while True:
                # asked before draining: nothing arrives after the end of the streams, so a drain after
                # seeing it is the last one needed
                ended = channel.exit_status_ready() and channel.eof_received
                while channel.recv_ready():
                    stdout += channel.recv(1 << 16)
                while channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(1 << 16)
                if ended:
                    break
                if not self.client.get_transport().is_active():
                    raise EOFError("the board stopped answering")
                if time.monotonic() >= deadline:
                    raise InfrastructureError(
                        f"{self.target.name}: no answer within {timeout:.0f} s to: "
                        f"{command if len(command) < 80 else command[:77] + '...'}"
                    )
                if channel.eof_received:  # the streams' pipe stays readable after their end: wait for the status alone
                    channel.status_event.wait(0.5)
                else:
                    select.select([channel], [], [], 0.5)
            return channel.recv_exit_status(), bytes(stdout), bytes(stderr)

    def channel(self, **options) -> paramiko.Channel:
        """A new channel for one command on this session's connection."""
        return self.client.get_transport().open_session(**options)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _aead_first(sock, **options) -> paramiko.Transport:
    """A transport that offers AES-GCM first (the server still chooses among all): paramiko checks a
    CTR cipher's MAC in Python, byte by byte, which was most of a deploy's own CPU."""
    transport = paramiko.Transport(sock, **options)
    security = transport.get_security_options()
    aead = tuple(name for name in security.ciphers if name.endswith("-gcm@openssh.com"))
    security.ciphers = aead + tuple(name for name in security.ciphers if name not in aead)
    return transport


def connect(
    connection: Connection,
    *,
    known_hosts: Path,
    trust_new_host: bool = False,
    wait_seconds: float = 0,
    base_dir: Path = PROJECT_ROOT,
    cancellation: Cancellation | None = None,
) -> Session:
    """Connect, retrying refused or silent connections for up to `wait_seconds` (a booting board); a
    `cancellation`'s cancel ends the wait at once."""
    target = resolve(connection, base_dir)
    client = paramiko.SSHClient()
    revoked = load_known_hosts(client.get_host_keys(), [USER_KNOWN_HOSTS, *target.known_hosts_files, known_hosts])
    trust = trust_new_host or connection.host_key_policy == "trust-new"
    client.set_missing_host_key_policy(_RecordNewKey(trust, known_hosts, revoked))
    deadline = time.monotonic() + wait_seconds
    stopped = cancellation.event if cancellation is not None else threading.Event()  # between tries
    while True:
        sock = None
        try:
            if target.proxy_command:
                sock = paramiko.ProxyCommand(target.proxy_command)
            else:
                sock = socket.create_connection((target.hostname, target.port), timeout=connection.connect_timeout)
                # Each command is a few small packets each way: with Nagle's algorithm against delayed ACKs
                # every round trip waited about 40 ms, even on loopback.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                notice_a_silent_board(sock)
            client.connect(
                target.hostname,
                port=target.port,
                username=target.user,
                sock=sock,
                key_filename=list(target.key_files) or None,
                timeout=connection.connect_timeout,
                banner_timeout=connection.connect_timeout,
                auth_timeout=connection.connect_timeout,
                transport_factory=_aead_first,
            )
            client.get_transport().set_keepalive(10)
            return Session(target, client, connection.sudo)
        except paramiko.BadHostKeyException as error:
            raise UserError(
                f"{target.known_hosts_name}: the host key CHANGED (now {error.key.get_name()} "
                f"SHA256:{_fingerprint(error.key)}); if the board was re-flashed, forget the old key with "
                f"ssh-keygen -R '{target.known_hosts_name}' -f {known_hosts} (and ~/.ssh/known_hosts)"
            ) from None
        except paramiko.AuthenticationException as error:
            raise UserError(
                f"{target.name}: login as {target.user} refused ({error}); set connection.key or load the key into your SSH agent"
            ) from None
        except (TimeoutError, OSError, paramiko.SSHException) as error:
            if sock is not None:
                sock.close()
            if "No authentication methods available" in str(error):  # no key and no agent: waiting will not help
                raise UserError(
                    f"{target.name}: no key to log in as {target.user} with: set connection.key "
                    "or load the key into your SSH agent"
                ) from None
            if time.monotonic() >= deadline:
                raise InfrastructureError(
                    f"{target.name}: cannot connect to {target.hostname}:{target.port} ({error or type(error).__name__})"
                ) from None
            if stopped.wait(1):
                raise Cancelled("interrupted") from None
