"""Facts about built files: hashes, a module's vermagic, the glibc a binary needs; atomic writes."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def vermagic_of(module: Path) -> str:
    """The `vermagic=` string from a .ko's .modinfo section (what insmod compares with the kernel)."""
    match = re.search(rb"(?:^|\0)vermagic=([^\0]*)\0", module.read_bytes())
    return match[1].decode() if match else ""


def release_of_vermagic(vermagic: str) -> str:
    return vermagic.split(" ", 1)[0]


def highest_glibc(readelf_versions: str) -> tuple[int, ...] | None:
    """The highest GLIBC_x.y a binary needs, from `llvm-readelf -V` output; None for no glibc need."""
    versions = [
        tuple(int(p) for p in m.groups() if p) for m in re.finditer(r"Name: GLIBC_(\d+)\.(\d+)(?:\.(\d+))?", readelf_versions)
    ]
    return max(versions) if versions else None


def current_umask() -> int:
    """The process's umask, read without setting it: os.umask(0) and back is a window in which files
    that other threads create get mode 0666."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022


def write_atomically(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = current_umask()
    try:
        # mkstemp's 0600 would hide artifacts from other users; secrets ask for their own mode
        os.fchmod(handle, mode if mode is not None else 0o666 & ~umask)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
