"""Putting files on a board: as one tar archive into a staging folder, checked with sha256 there, and
only then renamed into place. The archive goes by SFTP (pipelined) where the server offers it, else as
a stream over the exec channel of the board-side script (BusyBox boards, dropbear without SFTP). Either
way that script owns the staging folder: a cut connection hangs up on it, and it removes the folder,
so the old files stay as they were. It needs only sh, tar, sha256sum and mktemp."""

from __future__ import annotations

import hashlib
import io
import shlex
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ..errors import InfrastructureError, StepFailed, UserError
from ..progress import Progress
from .connection import WINDOW_BYTES, Session

STAGING_PREFIX = ".crossboard-incoming."
ARCHIVE = ".crossboard-archive.tar"  # in the staging folder, when it comes by SFTP
HASH_LIST = ".crossboard-sha256"
NAME_LIST = ".crossboard-names"
WORTH_SHOWING = 8 << 20  # bytes: smaller transfers are over before a progress line would help

_RECEIVE = """set -e
dir={dir}
mkdir -p "$dir"
stage=$(mktemp -d "$dir/{prefix}XXXXXX")
trap 'rm -rf "$stage"' EXIT HUP INT TERM PIPE
if [ {via} = sftp ]; then
  # the client writes the archive into the staging folder by SFTP, then says `sent` on stdin
  echo "$stage"
  IFS= read -r said && [ "$said" = sent ] || exit 6
  tar -x -f "$stage/{archive}" -C "$stage"
else
  tar -x -f - -C "$stage"
fi
cd "$stage"
if ! sha256sum -c {hashes} >/dev/null 2>&1; then
  echo "sha256 mismatch on the board:" >&2
  sha256sum -c {hashes} 2>&1 | grep -v ': OK$' >&2 || true
  exit 5
fi
# builtins but for mkdir and mv: each process started costs a slow board milliseconds
made=
while IFS= read -r name; do
  case $name in */*)
    parent=${{name%/*}}
    [ "$parent" = "$made" ] || mkdir -p "$dir/$parent"
    made=$parent
  esac
  mv -f "$stage/$name" "$dir/$name"
done < {names}
"""


@dataclass(frozen=True)
class Upload:
    local: Path | None
    remote: str  # relative to the remote folder
    sha256: str  # what the file must hash to on the board
    data: bytes | None = None  # content made in memory, instead of a local file

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.local is not None
        return self.local.stat().st_size

    @classmethod
    def of_bytes(cls, remote: str, data: bytes) -> Upload:
        return cls(None, remote, hashlib.sha256(data).hexdigest(), data)


def hashes_command(remote_dir: str, names: list[str]) -> str:
    """A shell line that prints `sha256  name` for those of `names` that exist under remote_dir."""
    if not names:
        return "true"  # sha256sum with no names would read stdin
    quoted = " ".join(shlex.quote(name) for name in names)
    return f"(cd {shlex.quote(remote_dir)} 2>/dev/null && sha256sum -- {quoted} 2>/dev/null); true"


def parse_hashes(text: str) -> dict[str, str]:
    hashes = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        hashes[name] = digest
    return hashes


def push(
    board: Session,
    remote_dir: str,
    uploads: list[Upload],
    progress: Progress | None = None,
    current: dict[str, str] | None = None,
) -> list[Upload]:
    """Send the uploads whose hash on the board differs; return those sent. `current`: the hashes on the
    board, when the caller read them already (with hashes_command, in a round trip it makes anyway).
    `progress` shows bytes sent, when there are enough of them to wait for."""
    for upload in uploads:
        if "\n" in upload.remote or upload.remote.startswith("/") or ".." in Path(upload.remote).parts:
            raise StepFailed(f"cannot send {upload.remote!r}: not a plain relative name")
        if upload.data is None and (upload.local is None or not upload.local.is_file()):
            raise UserError(f"{upload.local}: missing from the build's output (deleted since?): run invoke build again")
    if current is None:
        current = parse_hashes(board.run(hashes_command(remote_dir, [upload.remote for upload in uploads])).stdout)
    todo = [upload for upload in uploads if current.get(upload.remote) != upload.sha256]
    if not todo:
        return []
    total = sum(upload.size for upload in todo)
    if progress is not None and total >= WORTH_SHOWING:
        progress.set(0, total)
    else:
        progress = None
    sftp = board.sftp()
    script = _RECEIVE.format(
        dir=shlex.quote(remote_dir),
        prefix=STAGING_PREFIX,
        hashes=HASH_LIST,
        names=NAME_LIST,
        via="sftp" if sftp else "stream",
        archive=ARCHIVE,
    )
    try:
        channel = board.channel(window_size=WINDOW_BYTES)
        channel.exec_command(f"sh -c {shlex.quote(script)}")
        if sftp:
            stage = channel.makefile("rb").readline().decode(errors="replace").strip()
            if stage:
                with sftp.open(f"{stage}/{ARCHIVE}", "wb") as remote_file:
                    remote_file.set_pipelined(True)
                    _send_tar(remote_file.write, todo, progress)
                channel.sendall(b"sent\n")
        else:
            _send_tar(channel.sendall, todo, progress)
        channel.shutdown_write()
        stderr = channel.makefile_stderr("rb").read().decode(errors="replace")
        code = channel.recv_exit_status()
    except (OSError, EOFError, paramiko.SSHException) as error:
        raise InfrastructureError(
            f"{board.target.name}: connection lost while sending files ({error}); the files on the board are unchanged"
        ) from None
    if progress is not None:
        progress.finish()
    if code != 0:
        raise StepFailed(f"{board.target.name}: receiving files failed (exit {code}): {' '.join(stderr.split())}")
    return todo


class _Sink(io.RawIOBase):
    """A file object over `send` (a channel's sendall, an SFTP file's write) that reports progress."""

    def __init__(self, send: Callable[[bytes], object], progress: Progress | None):
        self.send = send
        self.progress = progress
        self.sent = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.send(data)
        self.sent += len(data)
        if self.progress:
            self.progress.set(self.sent)
        return len(data)


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def _send_tar(send: Callable[[bytes], object], uploads: list[Upload], progress) -> None:
    writer = io.BufferedWriter(_Sink(send, progress), buffer_size=256 << 10)
    # dereference: a link in out/ reaches the board as the file it points to, never as a link
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.GNU_FORMAT, dereference=True) as archive:
        for upload in uploads:
            if upload.data is None:
                archive.add(str(upload.local), arcname=upload.remote, recursive=False)
            else:
                _add_bytes(archive, upload.remote, upload.data)
        _add_bytes(archive, HASH_LIST, "".join(f"{u.sha256}  {u.remote}\n" for u in uploads).encode())
        _add_bytes(archive, NAME_LIST, "".join(f"{u.remote}\n" for u in uploads).encode())
    writer.flush()
