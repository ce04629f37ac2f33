"""Shared fixtures: the real toolchain image (built once, cached by its context hash) and settings."""

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from crossboard import commands
from crossboard.board.load import load_board
from crossboard.pipeline.context import BuildOptions
from crossboard.pipeline.pipeline import build
from crossboard.settings import Settings
from crossboard.toolchain.engine import docker_client


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    """The settings a user has, but for host keys: the tests' own, never the project's known_hosts."""
    known_hosts = tmp_path_factory.mktemp("ssh") / "known_hosts"
    return dataclasses.replace(Settings.from_environment(), known_hosts=known_hosts)


@pytest.fixture(scope="session")
def docker():
    return docker_client()


# The trixie-backports image, being built in a thread since the trixie image was ready.
BACKPORTS_BUILD = pytest.StashKey[Future]()


@pytest.fixture(scope="session")
def toolchain_image(request, settings, docker):
    """The default profile's image (trixie): made from nothing (debootstrap + import + build) on a fresh
    machine. When the session has tests that need the trixie-backports image, that one is built
    meanwhile, in a thread: mostly downloads and unpacking, beside the first kernel's compiling."""
    image = commands.toolchain(settings, "trixie", echo=False)[0]
    if any("backports_image" in item.fixturenames for item in request.session.items):
        builder = ThreadPoolExecutor(1, thread_name_prefix="backports-image")
        request.session.stash[BACKPORTS_BUILD] = builder.submit(commands.toolchain, settings, "trixie-backports", echo=False)
        builder.shutdown(wait=False)
    return image


@pytest.fixture(scope="session")
def backports_image(request, settings, toolchain_image):
    """The trixie-backports profile's image, on the same base: the one started beside the first, if it was."""
    started = request.session.stash.get(BACKPORTS_BUILD, None)
    return (started.result() if started else commands.toolchain(settings, "trixie-backports", echo=False))[0]


QUIET = BuildOptions(echo=False)


@pytest.fixture(scope="session")
def qemu_build(settings, toolchain_image):
    """The virtual board's full build: about ten minutes cold, seconds when the cache is warm."""
    return build(load_board("qemu-arm64"), settings, QUIET)


@pytest.fixture(scope="session")
def ssh_lab(tmp_path_factory):
    """Client key, test users, and a factory of real sshd servers on 127.0.0.1, all stopped at the end."""
    import os

    from sshd import SUDO_USER, SshServer, free_port, make_key, prepare_lab

    if os.geteuid() != 0:
        pytest.fail("the SSH tests start sshd and create test users: run them as root (CI does)")
    folder = tmp_path_factory.mktemp("ssh")
    client_key = prepare_lab(folder)
    servers = []

    class Lab:
        key = client_key

        def server(self, host_key_name="host_key", sftp=True) -> SshServer:
            server = SshServer(free_port(), make_key(folder / host_key_name), sftp).start(folder)
            servers.append(server)
            return server

        def connection(self, server, user=SUDO_USER, **extra):
            from crossboard.board.schema import Connection

            return Connection(host="127.0.0.1", port=server.port, user=user, key=str(client_key), sudo=user == SUDO_USER, **extra)

    yield Lab()
    for server in servers:
        server.stop()


def booted(vboard, fresh: bool = False):
    """For a fixture: the virtual board up while the tests use it, and down after, even when one fails."""
    from crossboard.virtual import qemu

    try:
        qemu.up(vboard, echo=False, fresh=fresh)
        yield vboard
    finally:
        qemu.down(vboard)
    assert vboard.pid() is None
