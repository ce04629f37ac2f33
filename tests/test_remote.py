"""SSH connection and transfer against a real OpenSSH server on 127.0.0.1, with real paramiko."""

import hashlib
import os
import shlex
import time

import pytest
from sshd import make_key

from crossboard.board.schema import Connection
from crossboard.errors import InfrastructureError, StepFailed, UserError
from crossboard.progress import Progress
from crossboard.remote.connection import connect
from crossboard.remote.transfer import STAGING_PREFIX, Upload, push

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def server(ssh_lab):
    return ssh_lab.server()


@pytest.fixture
def known_hosts(tmp_path):
    return tmp_path / "known_hosts"


def upload_of(path, remote):
    return Upload(path, remote, hashlib.sha256(path.read_bytes()).hexdigest())


def test_unknown_host_key_is_refused(ssh_lab, server, known_hosts):
    with pytest.raises(UserError, match=r"^\[127.0.0.1\]:\d+: unknown host key ssh-ed25519 SHA256:\S+; .*--trust-new-host"):
        connect(ssh_lab.connection(server), known_hosts=known_hosts)
    assert not known_hosts.exists()


def test_new_host_key_is_recorded_on_request_then_known(ssh_lab, server, known_hosts):
    with connect(ssh_lab.connection(server), trust_new_host=True, known_hosts=known_hosts) as board:
        assert board.run("id -un").stdout.strip() == "cbdeploy"
    assert f"[127.0.0.1]:{server.port} ssh-ed25519 " in known_hosts.read_text()
    with connect(ssh_lab.connection(server), known_hosts=known_hosts) as board:  # strict now passes
        assert board.run("true").code == 0


def test_changed_host_key_is_always_refused(ssh_lab, server, known_hosts):
    impostor = ssh_lab.server(host_key_name="other_host_key")
    known_hosts.write_text(
        f"[127.0.0.1]:{impostor.port} " + " ".join(server.host_key.with_suffix(".pub").read_text().split()[:2]) + "\n"
    )
    with pytest.raises(UserError, match=r"host key CHANGED .* ssh-keygen -R '\[127.0.0.1\]:\d+' -f "):
        connect(ssh_lab.connection(impostor), trust_new_host=True, known_hosts=known_hosts)


def test_nothing_listening_fails_after_a_bounded_wait(ssh_lab, known_hosts):
    from sshd import free_port

    class Down:
        port = free_port()

    started = time.monotonic()
    with pytest.raises(InfrastructureError, match="cannot connect to 127.0.0.1"):
        connect(ssh_lab.connection(Down), wait_seconds=2, known_hosts=known_hosts)
    assert time.monotonic() - started < 30


def test_privileged_commands_run_as_root_and_a_sudo_that_wants_a_password_is_named(ssh_lab, server, known_hosts):
    from sshd import PLAIN_USER

    with connect(ssh_lab.connection(server), trust_new_host=True, known_hosts=known_hosts) as board:
        result = board.run("id -un; echo done", privileged=True)
        assert (result.code, result.stdout) == (0, "root\ndone\n")
        assert board.run("exit 3", privileged=True).code == 3
    plain = ssh_lab.connection(server, user=PLAIN_USER).model_copy(update={"sudo": True})
    with connect(plain, known_hosts=known_hosts) as board:
        with pytest.raises(UserError) as refused:
            board.run("id -un", privileged=True)
    assert str(refused.value) == (
        f"127.0.0.1: {PLAIN_USER} cannot run sudo without a password: on the board add "
        f"'{PLAIN_USER} ALL=(ALL) NOPASSWD: ALL' to /etc/sudoers.d/crossboard"
    )


def test_a_command_that_ends_its_output_before_it_exits_is_waited_for_without_spinning(ssh_lab, server, known_hosts):
    """The channel's end of output comes a second before its exit status: the wait between them must
    sleep (paramiko keeps an ended channel readable, so a select there returned at once, again and again)."""
    with connect(ssh_lab.connection(server), trust_new_host=True, known_hosts=known_hosts) as board:
        cpu = time.thread_time()
        result = board.run("echo done; exec >&- 2>&-; sleep 1; exit 3")
        cpu = time.thread_time() - cpu
    assert (result.code, result.stdout) == (3, "done\n")
    assert cpu < 0.25, f"{cpu:.2f} CPU-s spent waiting one second for an exit status"


@pytest.fixture(scope="module", params=["sftp", "exec stream"])
def transfer_server(request, ssh_lab):
    """A server with SFTP, and one without (as dropbear without sftp-server): both ways files travel."""
    return ssh_lab.server(sftp=request.param == "sftp")


@pytest.fixture
def board(ssh_lab, transfer_server, known_hosts):
    with connect(ssh_lab.connection(transfer_server), trust_new_host=True, known_hosts=known_hosts) as board:
        yield board


def test_files_go_by_sftp_where_offered_else_as_an_exec_stream(board, transfer_server):
    assert board.transport_name == ("sftp" if transfer_server.sftp else "exec stream")


@pytest.fixture
def remote_dir(board):
    folder = f"/tmp/crossboard-test-{os.getpid()}-{time.monotonic_ns()}"
    yield folder
    board.run(f"rm -rf {shlex.quote(folder)}")


AWKWARD_NAMES = ["plain.ko", "with space.ko", "quote'and\"dq.ko", "semi;colon.ko", "$(touch pwned).ko", "sub dir/x.ko"]


def test_files_with_awkward_names_arrive_as_plain_names(board, remote_dir, tmp_path):
    uploads = []
    for index, name in enumerate(AWKWARD_NAMES):
        local = tmp_path / f"f{index}"
        local.write_bytes(f"content {index}".encode())
        uploads.append(upload_of(local, name))
    assert push(board, remote_dir, uploads) == uploads
    listing = board.run(f"cd {shlex.quote(remote_dir)} && find . -type f | sort").stdout.splitlines()
    assert listing == sorted(f"./{name}" for name in AWKWARD_NAMES)
    assert board.run(f"cat {shlex.quote(remote_dir + '/semi;colon.ko')}").stdout == "content 3"
    assert (
        board.run(
            "ls pwned",
        ).code
        != 0
    )


def test_unchanged_redeploy_sends_nothing(board, remote_dir, tmp_path):
    local = tmp_path / "a.ko"
    local.write_bytes(os.urandom(4096))
    progress = Progress("upload", mode="off", pattern=None)
    assert len(push(board, remote_dir, [upload_of(local, "a.ko")])) == 1
    assert push(board, remote_dir, [upload_of(local, "a.ko")], progress=progress) == []
    assert progress.done == 0


def test_hash_mismatch_is_detected_and_the_old_file_kept(board, remote_dir, tmp_path):
    local = tmp_path / "m.ko"
    local.write_bytes(b"old")
    push(board, remote_dir, [upload_of(local, "m.ko")])
    local.write_bytes(b"new, but not what the manifest says")
    with pytest.raises(StepFailed, match="sha256 mismatch on the board"):
        push(board, remote_dir, [Upload(local, "m.ko", "0" * 64)])
    assert board.run(f"cat {shlex.quote(remote_dir)}/m.ko").stdout == "old"
    assert STAGING_PREFIX not in board.run(f"ls -a {shlex.quote(remote_dir)}").stdout


def test_a_cut_connection_keeps_the_old_file_and_leaves_no_temp(ssh_lab, transfer_server, known_hosts, remote_dir, tmp_path):
    server = transfer_server
    local = tmp_path / "big.ko"
    local.write_bytes(b"old")
    with connect(ssh_lab.connection(server), trust_new_host=True, known_hosts=known_hosts) as board:
        push(board, remote_dir, [upload_of(local, "big.ko")])
    local.write_bytes(os.urandom(8 << 20))
    with connect(ssh_lab.connection(server), known_hosts=known_hosts) as board:

        class CutAfterOneMiB(Progress):
            def set(self, done, expected=None):
                super().set(done, expected)
                if done > (1 << 20):
                    board.client.get_transport().close()

        with pytest.raises(InfrastructureError, match="connection lost while sending files"):
            push(board, remote_dir, [upload_of(local, "big.ko")], progress=CutAfterOneMiB("upload", mode="off"))
    with connect(ssh_lab.connection(server), known_hosts=known_hosts) as board:
        for _ in range(50):  # the board-side script cleans up once sshd hangs up on it
            listing = board.run(f"ls -a {shlex.quote(remote_dir)}").stdout
            if STAGING_PREFIX not in listing:
                break
            time.sleep(0.1)
        assert STAGING_PREFIX not in listing
        assert board.run(f"cat {shlex.quote(remote_dir)}/big.ko").stdout == "old"


def test_a_command_filling_stderr_while_stdout_waits_does_not_hang(board):
    result = board.run("head -c 3000000 /dev/zero | tr '\\0' e >&2; echo done", timeout=30)
    assert result.stdout == "done\n" and len(result.stderr) == 3000000


def test_a_command_that_outlives_its_timeout_is_one_error_not_a_hang(board):
    with pytest.raises(InfrastructureError, match=r"no answer within 1 s to: sleep 30"):
        board.run("sleep 30", timeout=1)


def test_marker_lines_in_known_hosts_are_understood(ssh_lab, server, known_hosts, tmp_path, monkeypatch):
    other = tmp_path / "other_key"
    make_key(other)
    unrelated = (tmp_path / "other_key.pub").read_text().split()[:2]
    user_known_hosts = tmp_path / "user_known_hosts"
    user_known_hosts.write_text(
        f"@cert-authority *.lab {' '.join(unrelated)}\n@revoked * {' '.join(unrelated)}\na line ssh itself would pass over\n"
    )
    monkeypatch.setattr("crossboard.remote.connection.USER_KNOWN_HOSTS", user_known_hosts)
    with connect(ssh_lab.connection(server), trust_new_host=True, known_hosts=known_hosts) as board:
        assert board.run("echo hi").stdout == "hi\n"
    server_key = (server.host_key.parent / (server.host_key.name + ".pub")).read_text().split()[:2]
    user_known_hosts.write_text(f"@revoked * {' '.join(server_key)}\n")
    with pytest.raises(UserError, match=r"is marked @revoked in known_hosts: not connecting"):
        connect(ssh_lab.connection(server), known_hosts=known_hosts)


def test_a_board_behind_a_jump_host_named_in_an_included_ssh_config(ssh_lab, server, known_hosts, tmp_path, monkeypatch):
    from sshd import SUDO_USER

    jump = ssh_lab.server(host_key_name="jump_host_key")
    (tmp_path / "lab.conf").write_text(
        f"Host labboard\n  HostName 127.0.0.1\n  Port {server.port}\n  ProxyJump labjump\n"
        f"Host labjump\n  HostName 127.0.0.1\n  Port {jump.port}\n  User {SUDO_USER}\n  IdentityFile {ssh_lab.key}\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    (tmp_path / "config").write_text(f"Include {tmp_path / 'lab.conf'}\n")
    monkeypatch.setattr("crossboard.remote.connection.USER_SSH_CONFIG", tmp_path / "config")
    connection = Connection(host="labboard", user=SUDO_USER, key=str(ssh_lab.key))
    with connect(connection, trust_new_host=True, known_hosts=known_hosts) as board:
        assert board.target.proxy_command.endswith(f"-W 127.0.0.1:{server.port} labjump")
        assert board.run("echo $SSH_CONNECTION").stdout.split()[2:] == ["127.0.0.1", str(server.port)]


def test_a_link_in_the_output_reaches_the_board_as_the_file_it_points_to(board, remote_dir, tmp_path):
    (tmp_path / "real.ko").write_bytes(b"module bytes")
    (tmp_path / "link.ko").symlink_to(tmp_path / "real.ko")
    push(board, remote_dir, [upload_of(tmp_path / "link.ko", "link.ko")])
    assert board.run(f"test -L {shlex.quote(remote_dir)}/link.ko").code != 0
    assert board.run(f"cat {shlex.quote(remote_dir)}/link.ko").stdout == "module bytes"


CLIENT_IN_NAMESPACE = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from crossboard.board.schema import Connection
from crossboard.errors import CrossboardError
from crossboard.remote.connection import connect
connection = Connection(host="127.0.0.1", port={port}, user="cbdeploy", key={key!r}, connect_timeout=5)
with connect(connection, trust_new_host=True, wait_seconds=15, known_hosts=Path({known!r})) as board:
    print("connected", flush=True)
    started = time.monotonic()
    try:
        board.run("sleep 600", timeout=900)
        print("finished")
    except CrossboardError as error:
        print(f"after {{time.monotonic() - started:.0f}} s: {{error}}")
"""


def test_a_board_that_falls_silent_is_noticed_long_before_the_commands_time(ssh_lab, tmp_path):
    import re
    import subprocess
    import sys
    import uuid

    from sshd import SshServer, free_port

    from crossboard import PROJECT_ROOT

    namespace = f"cb-{uuid.uuid4().hex[:8]}"  # the board and the client on a loopback of the test's own
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    server = client = None
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        server = SshServer(free_port(), make_key(tmp_path / "host_key"), namespace=namespace).start(tmp_path)
        script = CLIENT_IN_NAMESPACE.format(
            root=str(PROJECT_ROOT), port=server.port, key=str(ssh_lab.key), known=str(tmp_path / "known_hosts")
        )
        client = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        said = [client.stdout.readline() for _ in range(2)]  # the new host key's fingerprint, then this
        assert said[-1].strip() == "connected", said
        time.sleep(1)
        # the board falls silent: nothing it sends arrives any more, and nothing says so (no reset)
        subprocess.run(
            ["ip", "netns", "exec", namespace, "iptables", "-A", "INPUT", "-p", "tcp", "--sport", str(server.port), "-j", "DROP"],
            check=True,
        )
        output = client.communicate(timeout=150)[0]
        found = re.search(r"after (\d+) s: 127.0.0.1: the connection was lost", output)
        assert found, output
        assert int(found[1]) < 90  # the command's own time is 900 s
    finally:
        if client and client.poll() is None:
            client.kill()
            client.wait()
        if server:
            server.stop()
        # whatever still runs in the namespace (sshd's session for the client, the command) goes with it
        pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
        if pids:
            subprocess.run(["kill", "-9", *pids], check=False)
        subprocess.run(["ip", "netns", "del", namespace], check=False)
