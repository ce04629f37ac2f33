"""Boards in a labgrid lab, for real: a labgrid coordinator and an exporter on 127.0.0.1 export an sshd
standing in for a board as a place's NetworkService; `invoke deploy` reserves the place, deploys through
it and releases it."""

import dataclasses
import shutil
import threading
import uuid

import pytest
from fakes import fake_built_board
from labgrid_lab import PLACE, Lab

from crossboard import commands
from crossboard.deploy.run import DeployOptions
from crossboard.errors import InfrastructureError, UserError

pytestmark = [pytest.mark.root, pytest.mark.labgrid]


@pytest.fixture
def lab(tmp_path, ssh_lab, settings):
    from sshd import SUDO_USER

    server = ssh_lab.server()
    remote_root = f"/tmp/crossboard-test-{uuid.uuid4().hex}"
    project = tmp_path / "project"
    fake_built_board(project, tmp_path / "out", "lab-board", server.port, SUDO_USER, ssh_lab.key, remote_root)
    labgrid = Lab(tmp_path, server.port, SUDO_USER)
    board_file = project / "boards/lab-board.yaml"
    text = board_file.read_text()
    by_address = f"  host: 127.0.0.1\n  port: {server.port}\n  user: {SUDO_USER}\n"
    assert by_address in text
    board_file.write_text(text.replace(by_address, f"  labgrid: {{place: {PLACE}, coordinator: '{labgrid.coordinator}'}}\n"))
    labgrid.settings = dataclasses.replace(
        settings, boards_dir=project / "boards", out_dir=tmp_path / "out", known_hosts=tmp_path / "known_hosts"
    )
    yield labgrid
    labgrid.stop()
    shutil.rmtree(remote_root, ignore_errors=True)


QUIET = DeployOptions(echo=False)


def test_deploy_reserves_the_place_reaches_the_board_through_it_and_releases_it(lab):
    assert lab.holder() == ""
    (report,) = commands.deploy("lab-board", lab.settings, QUIET)
    assert report["ok"], report
    assert report["apps"][0]["stdout"].startswith("Hello, lab! from ")
    assert lab.holder() == ""  # released


def test_a_place_someone_else_holds_is_refused_and_left_to_them(lab):
    assert lab.client("-p", PLACE, "acquire", user="alice").returncode == 0
    with pytest.raises(UserError, match=f"connection.labgrid.place {PLACE} is acquired by another-bench/alice"):
        commands.deploy("lab-board", lab.settings, QUIET)
    assert lab.holder() == "another-bench/alice"
    assert not (lab.settings.out_dir / "lab-board/deploy.json").exists()  # nothing was sent


def test_a_place_the_user_holds_already_is_used_and_kept(lab):
    assert lab.client("-p", PLACE, "acquire").returncode == 0
    holder = lab.holder()
    (report,) = commands.deploy("lab-board", lab.settings, QUIET)
    assert report["ok"], report
    assert lab.holder() == holder != ""


def test_the_coordinator_going_away_mid_deploy_is_a_clear_error(lab):
    """The deploy goes on over SSH; releasing the place then cannot be done, and says so."""
    slow_app = '#!/bin/sh\nsleep 3\necho "Hello, $1! from $(uname -m)"\n'
    out = lab.settings.out_dir / "lab-board/apps/hello"
    out.write_text(slow_app)
    from crossboard.artifacts.manifest import Manifest

    manifest = Manifest(board="lab-board", out_dir=out.parent.parent)
    manifest.add_artifact(out, "app", source="apps/hello")
    manifest.finish("done")
    stopper = threading.Timer(1.5, lab.coordinator_process.terminate)
    stopper.start()
    try:
        with pytest.raises(
            InfrastructureError, match=f"labgrid place {PLACE} could not be released .* labgrid-client -p {PLACE} release"
        ):
            commands.deploy("lab-board", lab.settings, QUIET)
    finally:
        stopper.cancel()


def test_the_places_power_switch_is_the_boards_power_cycle_and_its_serial_port_its_console(lab):
    from crossboard.board.load import load_board
    from crossboard.deploy.reboot import power_cycle
    from crossboard.remote.places import reserved

    with reserved([load_board("lab-board", lab.settings.boards_dir)], echo=False) as (board,):
        assert board.spec.deploy.power_cycle.endswith(f"-x {lab.coordinator} -p {PLACE} power cycle")
        assert board.spec.deploy.console == "socket://127.0.0.1:1"  # the exporter's raw TCP console
        assert power_cycle(board)
    assert lab.switched == ["/relay/0/0", "/relay/0/1"]  # off, then on
    assert lab.holder() == ""


def test_invoke_deploy_on_a_labgrid_board_says_what_it_reserved_and_refuses_a_held_place_in_one_line(lab):
    from fakes import invoke

    where = {
        "CROSSBOARD_BOARDS": str(lab.settings.boards_dir),
        "CROSSBOARD_OUT": str(lab.settings.out_dir),
        "CROSSBOARD_KNOWN_HOSTS": str(lab.settings.known_hosts),
    }
    done = invoke("deploy", "--board", "lab-board", **where)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"lab-board: labgrid place {PLACE} acquired" in done.stdout
    assert lab.holder() == ""
    assert lab.client("-p", PLACE, "acquire", user="alice").returncode == 0
    refused = invoke("deploy", "--board", "lab-board", **where)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        f"crossboard: error: lab-board.yaml: connection.labgrid.place {PLACE} is acquired by another-bench/alice: "
        "crossboard does not take a place someone else holds"
    ]
    lab.coordinator_process.terminate()
    lab.coordinator_process.wait(timeout=10)
    unanswered = invoke("deploy", "--board", "lab-board", **where)
    assert unanswered.returncode != 0
    assert unanswered.stderr.strip().splitlines() == [
        f"crossboard: error: lab-board.yaml: connection.labgrid: the labgrid coordinator at {lab.coordinator} does not "
        "answer (Error: Could not connect to coordinator)"
    ]
