"""SSH keys for the virtual board, made on the host when its root is built: the guest's host key
(in dropbear's own format, so no arm64 tool has to run here) and the key deploy logs in with."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..artifacts.files import write_atomically

KEY_TYPE = b"ssh-ed25519"


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def public_line(key: Ed25519PrivateKey) -> str:
    """`ssh-ed25519 AAAA...`, as authorized_keys and known_hosts write a key."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{KEY_TYPE.decode()} {base64.b64encode(_ssh_string(KEY_TYPE) + _ssh_string(raw)).decode()}"


def dropbear_private(key: Ed25519PrivateKey) -> bytes:
    """dropbear's key file: string "ssh-ed25519", then a string of the 32-byte seed and 32-byte public key."""
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _ssh_string(KEY_TYPE) + _ssh_string(seed + public)


def ensure_keys(folder: Path) -> dict[str, Path]:
    """The guest host key (dropbear format + public line) and the client key (OpenSSH format + .pub)."""
    paths = {
        "host": folder / "host_key.dropbear",
        "host_pub": folder / "host_key.pub",
        "client": folder / "id_ed25519",
        "client_pub": folder / "id_ed25519.pub",
    }
    if not paths["host"].is_file() or not paths["host_pub"].is_file():
        host = Ed25519PrivateKey.generate()
        write_atomically(paths["host"], dropbear_private(host), mode=0o600)
        write_atomically(paths["host_pub"], (public_line(host) + "\n").encode())
    if not paths["client"].is_file() or not paths["client_pub"].is_file():
        client = Ed25519PrivateKey.generate()
        private = client.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        write_atomically(paths["client"], private, mode=0o600)
        write_atomically(paths["client_pub"], (public_line(client) + " crossboard-virtual-board\n").encode())
    return paths
