"""Facts about built files: hashes, a module's vermagic, a kernel's build ID, the glibc a binary needs;
atomic writes."""

from __future__ import annotations

import gzip
import hashlib
import mmap
import os
import re
import struct
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


NT_GNU_BUILD_ID = 3
SHT_NOTE = 7


def build_id_in_notes(notes: bytes) -> str:
    """The GNU build ID in a run of ELF notes (a note section, or a running kernel's /sys/kernel/notes),
    as hex; "" when there is none."""
    offset = 0
    while offset + 12 <= len(notes):
        name_size, desc_size, kind = struct.unpack_from("<III", notes, offset)
        desc_at = offset + 12 + (name_size + 3) // 4 * 4
        if kind == NT_GNU_BUILD_ID and notes[offset + 12 : offset + 12 + name_size] == b"GNU\0":
            return notes[desc_at : desc_at + desc_size].hex()
        offset = desc_at + (desc_size + 3) // 4 * 4
    return ""


# Prints a running kernel's ELF notes as hex: od and tr are on every board, BusyBox ones too.
NOTES_AS_HEX = "od -An -v -tx1 /sys/kernel/notes 2>/dev/null | tr -d ' \\n'"


def build_id_in_hex_notes(text: str) -> str:
    """The build ID in NOTES_AS_HEX's output; "" when the board printed none or something else."""
    try:
        return build_id_in_notes(bytes.fromhex(text.strip()))
    except ValueError:
        return ""


def build_id_of_elf(path: Path) -> str:
    """The GNU build ID of a 64-bit little-endian ELF file (vmlinux), from its note sections; "" for none."""
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as elf:
        if elf[:6] != b"\x7fELF\x02\x01":
            return ""
        (table,), (entry_size, count) = struct.unpack_from("<Q", elf, 0x28), struct.unpack_from("<HH", elf, 0x3A)
        for index in range(count):
            header = table + index * entry_size
            (kind,), (offset, size) = struct.unpack_from("<I", elf, header + 4), struct.unpack_from("<QQ", elf, header + 0x18)
            if kind == SHT_NOTE and (found := build_id_in_notes(elf[offset : offset + size])):
                return found
    return ""


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
    with writing_atomically(path, mode) as out:
        out.write(data)


@contextmanager
def writing_atomically(path: Path, mode: int | None = None) -> Iterator:
    """A binary file to write that appears at `path` (by a rename) only once the block finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = current_umask()
    try:
        # mkstemp's 0600 would hide artifacts from other users; secrets ask for their own mode
        os.fchmod(handle, mode if mode is not None else 0o666 & ~umask)
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def pack_tree(root: Path, prefix: str, target: Path) -> None:
    """`root` as a tar.gz whose members are under `prefix`, the same bytes for the same files: sorted,
    owned by root, dated 1970, modes and symbolic links kept."""
    with (
        writing_atomically(target) as out,
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as zipped,
    ):
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path in [root, *sorted(root.rglob("*"))]:
                info = archive.gettarinfo(path, arcname=f"{prefix}/{path.relative_to(root)}".removesuffix("/."))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isfile():
                    with open(path, "rb") as handle:
                        archive.addfile(info, handle)
                else:
                    archive.addfile(info)
