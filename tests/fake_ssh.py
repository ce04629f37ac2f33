"""A fake SSH session for the fast tier: a board modelled in Python that answers the commands deploy
and kernel installs send, records each one, and keeps the files pushed to it. Session.run's own logic
(sudo wrapping and its refusals, lost connections) runs as on a real board; only the exchange with the
board and the push channel are replaced."""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import shlex
import struct
import tarfile
from dataclasses import dataclass, field

from crossboard.deploy.preflight import FACTS_COMMAND
from crossboard.deploy.reboot import REBOOT
from crossboard.remote.access import Access
from crossboard.remote.connection import ROOT_SHELL_STARTED, Session, Target
from crossboard.remote.transfer import HASH_LIST, NAME_LIST

MARKED = re.compile(r'^echo (crossboard-mark-\w+) > /dev/kmsg; (.*); echo "\1 exit=\$\?"; dmesg$', re.DOTALL)
RELOAD = re.compile(r"^if \[ -e (\S+) \]; then rmmod (\S+) && (.*); else exit (\d+); fi$", re.DOTALL)


def kernel_notes(build_id: str) -> bytes:
    """/sys/kernel/notes as a kernel shows it: a Linux note, then the GNU build ID note (none for "")."""
    linux = struct.pack("<III", 6, 4, 0x100) + b"Linux\0\0\0" + b"\x01\0\0\0"
    if not build_id:
        return linux
    desc = bytes.fromhex(build_id)
    return linux + struct.pack("<III", 4, len(desc), 3) + b"GNU\0" + desc


@dataclass
class FakeBoard:
    """What the board is and has. `sudo`: nopasswd, password (sudo asks for one) or missing.
    `drop_after`: the connection drops when this many commands have been answered."""

    release: str = "6.12.107-crossboard"
    rust: bool | None = True
    glibc: str = "2.41"
    user: str = "debian"
    build_id: str = ""  # the running kernel's, shown in its notes; "" shows no notes
    sudo: str = "nopasswd"
    drop_after: int | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # absolute path on the board -> content
    loaded: set[str] = field(default_factory=set)
    ours: set[str] = field(default_factory=set)  # modules crossboard's marker says it loaded
    kmsg: list[str] = field(default_factory=list)  # the kernel log, from boot on
    load_lines: dict[str, list[str]] = field(default_factory=dict)  # module -> what it logs as it loads (KTAP)
    commands: list[str] = field(default_factory=list)  # as the board's shell got them, without sudo
    app_output: dict[str, tuple[int, str]] = field(default_factory=dict)  # binary name -> (exit, stdout)
    # the release each reboot comes back on, in turn; None: it never answers again (a hang)
    reboots_into: list[str | None] = field(default_factory=list)
    boots: int = 1
    down: bool = False
    missing: set[str] = field(default_factory=set)  # commands `command -v` does not find
    _last_exit: int = 0

    def answer(self, command: str) -> tuple[int, bytes, bytes]:
        if self.drop_after is not None and len(self.commands) >= self.drop_after:
            raise EOFError("the board stopped answering")
        privileged = command.startswith("sudo -n sh -c ")
        if privileged:
            if self.sudo == "missing":
                self.commands.append(command)
                return 127, b"", b"sh: 1: sudo: not found\n"
            if self.sudo == "password":
                self.commands.append(command)
                return 1, b"", b"sudo: a password is required\n"
            command = shlex.split(command)[4].removeprefix(f"echo {ROOT_SHELL_STARTED}; ")
        self.commands.append(command)
        code, out = self._shell(command)
        return code, ((ROOT_SHELL_STARTED + "\n") if privileged else "").encode() + out.encode(), b""

    def _shell(self, command: str) -> tuple[int, str]:
        if command.startswith(FACTS_COMMAND):
            return 0, self._facts() + self._hashes(command)
        if marked := MARKED.match(command):
            return self._marked(marked[1], marked[2])
        if command.startswith("sh -c ") and " timeout " in command:
            binary, *args = shlex.split(command)[6:]
            if binary not in self.files:
                return 127, ""
            # as tests/fakes.py's hello app would answer, unless the test says otherwise
            return self.app_output.get(posixpath.basename(binary), (0, f"Hello, {' '.join(args)}! from aarch64\n"))
        if command == "dmesg":
            return 0, "".join(f"[ 1.0] {line}\n" for line in self.kmsg)
        if command == "uname -r":
            return 0, self.release + "\n"
        if command.startswith("cat /proc/sys/kernel/random/boot_id"):
            return 0, f"boot-{self.boots}\n"
        if command == REBOOT:
            coming = self.reboots_into.pop(0)
            self.down, self.boots, self.release = coming is None, self.boots + 1, coming or self.release
            self.loaded, self.ours = set(), set()
            return 0, ""
        words = shlex.split(command) if "\n" not in command else []
        if words[:2] == ["command", "-v"] and len(words) == 3:
            return (1 if words[2] in self.missing else 0), ""
        if words[:1] == ["cat"] and len(words) == 2:
            return (0, self.files[words[1]].decode()) if words[1] in self.files else (1, "")
        if words[:2] == ["test", "-e"] and len(words) == 3:
            there = words[2] in self.files or any(path.startswith(words[2] + "/") for path in self.files)
            return (0 if there else 1), ""
        if command.startswith("set -e\n"):
            self._script(command)
        return 0, ""

    def _script(self, script: str) -> None:
        """The file moves of a kernel install or rollback script, on the files; the rest (sync, tar,
        depmod, checks) is taken as done."""
        for line in script.splitlines()[1:]:
            words = shlex.split(line) if line and not line.startswith(("if ", "rmdir ")) else []
            if words[:1] == ["cp"]:
                *sources, target = [word for word in words[1:] if word != "-p"]
                for source in sources:
                    into = f"{target.rstrip('/')}/{posixpath.basename(source)}" if target.endswith("/") else target
                    self.files[into] = self.files[source]
            elif words[:2] == ["mv", "-f"]:
                self.files[words[3]] = self.files.pop(words[2])
            elif words[:1] == ["rm"]:
                for path in words[2:]:
                    self.files = {k: v for k, v in self.files.items() if k != path and not k.startswith(path + "/")}

    def _facts(self) -> str:
        rust = "unknown" if self.rust is None else ("1" if self.rust else "0")
        return (
            f"release={self.release}\nrust={rust}\nglibc={self.glibc}\nuser={self.user}\n"
            f"loaded={' '.join(sorted(self.loaded))}\nnotes={kernel_notes(self.build_id).hex()}\n"
            "crossboard-hashes-follow\n"
        )

    def _hashes(self, command: str) -> str:
        folder = re.search(r"\(cd (\S+) 2>/dev/null", command)
        if not folder:
            return ""
        root = shlex.split(folder[1])[0] + "/"
        return "".join(
            f"{hashlib.sha256(data).hexdigest()}  {path.removeprefix(root)}\n"
            for path, data in self.files.items()
            if path.startswith(root)
        )

    def _marked(self, mark: str, action: str) -> tuple[int, str]:
        self.kmsg.append(mark)
        code = self._module_action(action)
        if code is None:  # the action ran `exit`: the shell ended there
            return self._last_exit, ""
        return 0, f"{mark} exit={code}\n" + "".join(f"[ 1.0] {line}\n" for line in self.kmsg)

    def _module_action(self, action: str) -> int | None:
        if reload := RELOAD.match(action):
            name = reload[2]
            if posixpath.basename(reload[1]) not in self.ours:
                self._last_exit = int(reload[4])
                return None
            self._unload(name)
            action = reload[3]
        words = shlex.split(action.split(" && ")[0])
        if words[0] == "insmod":
            name = posixpath.basename(words[1]).removesuffix(".ko")
            if words[1] not in self.files or name in self.loaded:
                return 1
            self.loaded.add(name)
            self.ours.add(name)
            self.kmsg += self.load_lines.get(name, []) + [f"{name}: init"]
            return 0
        if words[0] == "rmmod":
            return 0 if self._unload(words[1]) else 1
        raise AssertionError(f"the fake board does not know this module action: {action}")

    def _unload(self, name: str) -> bool:
        if name not in self.loaded:
            return False
        self.loaded.discard(name)
        self.ours.discard(name)
        self.kmsg.append(f"{name}: exit")
        return True

    def receive(self, script: str, archive: bytes) -> None:
        """What the board-side receive script does: unpack, check the hashes, move into place."""
        folder = shlex.split(re.search(r"^dir=(.*)$", script, re.MULTILINE)[1])[0]
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r|") as unpacked:
            members = {m.name: unpacked.extractfile(m).read() for m in unpacked if m.isfile()}
        hashes = dict(reversed(line.split("  ", 1)) for line in members.pop(HASH_LIST).decode().splitlines())
        for name in members.pop(NAME_LIST).decode().splitlines():
            assert hashlib.sha256(members[name]).hexdigest() == hashes[name], f"{name}: sha256 mismatch"
            self.files[f"{folder}/{name}"] = members[name]


class _FakeChannel:
    """The push channel: what is sent is the archive the receive script would read."""

    def __init__(self, board: FakeBoard):
        self.board, self.script, self.sent = board, "", bytearray()

    def exec_command(self, command: str) -> None:
        self.script = shlex.split(command)[2]

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def shutdown_write(self) -> None:
        self.board.receive(self.script, bytes(self.sent))

    def makefile_stderr(self, mode: str) -> io.BytesIO:
        return io.BytesIO(b"")

    def recv_exit_status(self) -> int:
        return 0


class FakeSession(Session):
    def __init__(self, target: Target, board: FakeBoard, sudo: bool):
        super().__init__(target, None, sudo)  # type: ignore[arg-type]
        self.board = board
        self.closed = False

    def _exchange(self, command: str, stdin: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
        if self.closed:
            raise EOFError("closed")
        return self.board.answer(command)

    def sftp(self):
        return None  # files go as a stream, through _FakeChannel

    def channel(self, **options) -> _FakeChannel:  # type: ignore[override]
        return _FakeChannel(self.board)

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class FakeAccess(Access):
    """Access whose sessions reach FakeBoards, by board name; a board not listed is down."""

    boards: dict[str, FakeBoard] = field(default_factory=dict)

    def open(self, board, wait_seconds=0, cancellation=None) -> Session:
        from crossboard.errors import InfrastructureError

        if board.name not in self.boards or self.boards[board.name].down:
            raise InfrastructureError(f"{board.spec.connection.host}: cannot connect (the fake board is down)")
        connection = board.spec.connection
        target = Target(connection.host, connection.host, connection.port or 22, connection.user or "root", ())
        return FakeSession(target, self.boards[board.name], connection.sudo)
