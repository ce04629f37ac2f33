"""known_hosts as ssh reads it, and keys checked before any connection: pure logic on files (the same
against a real sshd is in tests/test_remote.py)."""

import subprocess

import paramiko
import pytest

from crossboard.board.schema import Connection
from crossboard.errors import UserError
from crossboard.remote.connection import _RecordNewKey, load_known_hosts, read_known_hosts, resolve

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two host keys, made by OpenSSH's ssh-keygen."""
    folder = tmp_path_factory.mktemp("keys")
    for name in ("a", "b"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    return [paramiko.Ed25519Key.from_private_key_file(str(folder / name)) for name in ("a", "b")]


def line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def test_a_revoked_marker_ends_at_a_tab_as_at_a_space(tmp_path, keys):
    (tmp_path / "known_hosts").write_text(f"@revoked\t* {line(keys[0])}\n@revoked  * {line(keys[1])}\n")
    entries, revoked = read_known_hosts(tmp_path / "known_hosts")
    assert entries == [] and revoked == {keys[0].asbytes(), keys[1].asbytes()}


def test_a_key_revoked_in_one_file_is_not_known_from_another(tmp_path, keys):
    (tmp_path / "project").write_text(f"board {line(keys[0])}\nother {line(keys[1])}\n")
    (tmp_path / "user").write_text(f"@revoked * {line(keys[0])}\n")
    host_keys = paramiko.HostKeys()
    revoked = load_known_hosts(host_keys, [tmp_path / "user", tmp_path / "project", tmp_path / "missing"])
    assert revoked == {keys[0].asbytes()}
    assert host_keys.lookup("board") is None and host_keys.lookup("other") is not None


def test_a_revoked_key_is_refused_before_it_is_trusted_or_recorded(tmp_path, keys):
    known_hosts = tmp_path / "known_hosts"
    policy = _RecordNewKey(trust_new=True, known_hosts=known_hosts, revoked={keys[0].asbytes()})
    with pytest.raises(UserError, match="its host key ssh-ed25519 SHA256:.* is marked @revoked in known_hosts: not connecting"):
        policy.missing_host_key(paramiko.SSHClient(), "board", keys[0])
    assert not known_hosts.exists()


def test_a_known_hosts_that_cannot_be_written_is_bad_input_at_once(tmp_path, keys):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.mkdir()  # a folder where the file should be
    policy = _RecordNewKey(trust_new=True, known_hosts=known_hosts, revoked=set())
    with pytest.raises(UserError, match="known_hosts: cannot record the new host key of board"):
        policy.missing_host_key(paramiko.SSHClient(), "board", keys[1])


@pytest.mark.parametrize("content", ["public", "garbage", "putty"])
def test_a_key_file_that_is_no_private_key_is_bad_input_at_once(tmp_path, keys, content):
    key = tmp_path / "id"
    key.write_text(
        {
            "public": line(keys[0]) + "\n",
            "garbage": "not a key\n",
            "putty": "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n",
        }[content]
    )
    with pytest.raises(UserError, match=r"board: connection.key: .*/id is not a private key paramiko can use"):
        resolve(Connection(host="board", key=str(key)), tmp_path, tmp_path / "no_ssh_config")
