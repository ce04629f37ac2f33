"""invoke deploy against real OpenSSH servers on 127.0.0.1 (modules are refused by preflight there:
the host's kernel is not ours; loading for real happens on the virtual board)."""

import gzip
import json
import shutil
import uuid
from pathlib import Path

import pytest
from fakes import fake_built_board

from crossboard.deploy.run import DeployOptions, deploy_many
from crossboard.errors import StepFailed, UserError
from crossboard.remote.access import Access

pytestmark = pytest.mark.root


@pytest.fixture
def lab(tmp_path, ssh_lab):
    remote_root = Path(f"/tmp/crossboard-test-{uuid.uuid4().hex}")

    class Lab:
        out = tmp_path / "out"
        access = Access(tmp_path / "known_hosts")

        def board(self, name, port, user="cbdeploy", module_release=None, **more):
            return fake_built_board(
                tmp_path / "project", self.out, name, port, user, ssh_lab.key, str(remote_root / name), module_release, **more
            )

    yield Lab()
    shutil.rmtree(remote_root, ignore_errors=True)


def test_a_module_for_another_release_is_refused_before_insmod(lab, ssh_lab):
    server = ssh_lab.server()
    board = lab.board("b1", server.port, module_release="6.12.107-crossboard")
    with pytest.raises(StepFailed, match="deploy failed on 1 of 1 boards: b1"):
        deploy_many([board], lab.out, DeployOptions(echo=False), lab.access)
    report = json.loads((lab.out / "b1/deploy.json").read_text())
    module = report["modules"][0]
    assert "built for 6.12.107-crossboard but the board runs" in module["refused"]
    assert "Invalid module format" in module["refused"]
    assert "loaded" not in module  # never got as far as insmod
    app = report["apps"][0]
    assert app["ok"] and app["stdout"].startswith("Hello, lab! from ")
    assert sorted(report["sent"]) == ["apps/hello", "modules/rust_minimal.ko"]


def test_redeploy_of_unchanged_files_sends_nothing(lab, ssh_lab):
    server = ssh_lab.server()
    board = lab.board("b2", server.port)
    first = deploy_many([board], lab.out, DeployOptions(echo=False), lab.access)[0]
    again = deploy_many([board], lab.out, DeployOptions(echo=False), lab.access)[0]
    assert first["sent"] == ["apps/hello"] and again["sent"] == []
    assert again["ok"]


def test_parallel_deploy_goes_on_when_one_board_is_down(lab, ssh_lab, capsys):
    from sshd import free_port

    boards = [lab.board("up1", ssh_lab.server().port), lab.board("down", free_port()), lab.board("up2", ssh_lab.server().port)]
    with pytest.raises(StepFailed, match="deploy failed on 1 of 3 boards: down"):
        deploy_many(boards, lab.out, DeployOptions(wait_seconds=1), lab.access)
    reports = {name: json.loads((lab.out / name / "deploy.json").read_text()) for name in ("up1", "down", "up2")}
    assert reports["up1"]["ok"] and reports["up2"]["ok"]
    assert reports["down"]["error"].startswith("127.0.0.1: cannot connect to 127.0.0.1:")
    table = capsys.readouterr().out
    assert "down             FAILED" in table and "up1              ok" in table


def test_an_unreachable_board_is_said_to_be_unreached_not_up_to_date(lab, capsys):
    from sshd import free_port

    with pytest.raises(StepFailed):
        deploy_many([lab.board("gone", free_port())], lab.out, DeployOptions(wait_seconds=0), lab.access)
    shown = capsys.readouterr().out
    assert "sent: nothing (the board was not reached)" in shown and "all up to date" not in shown


# Kills the SSH session it runs in (the first sshd above it), as a board that reboots or loses power
# mid-deploy drops its connection.
DROP_THE_CONNECTION = """#!/bin/sh
pid=$$
while [ "$pid" -gt 1 ]; do
  case "$(cat /proc/$pid/comm)" in sshd*) kill -9 "$pid"; sleep 5; exit 0 ;; esac
  pid=$(cut -d' ' -f4 /proc/$pid/stat)
done
"""


def test_a_board_that_drops_mid_deploy_gets_a_report_and_the_others_a_summary(lab, ssh_lab, capsys):
    boards = [
        lab.board("dropper", ssh_lab.server().port, app_script=DROP_THE_CONNECTION),
        lab.board("steady", ssh_lab.server().port),
    ]
    with pytest.raises(StepFailed, match="deploy failed on 1 of 2 boards: dropper"):
        deploy_many(boards, lab.out, DeployOptions(wait_seconds=1), lab.access)
    report = json.loads((lab.out / "dropper/deploy.json").read_text())
    assert report["error"].startswith("127.0.0.1: the connection was lost")
    assert json.loads((lab.out / "steady/deploy.json").read_text())["ok"]
    assert "dropper          FAILED" in capsys.readouterr().out


def test_a_module_the_build_does_not_have_is_refused_before_connecting(lab):
    from sshd import free_port

    board = lab.board("typo", free_port(), module_release="6.12.107-crossboard")
    with pytest.raises(UserError, match="deploy failed on 1 of 1 boards: typo"):  # bad input: exit 2, as the README says
        deploy_many([board], lab.out, DeployOptions(echo=False, modules=frozenset({"rust_minimall"}), wait_seconds=0), lab.access)
    report = json.loads((lab.out / "typo/deploy.json").read_text())
    assert report["error"] == "--module: the build of typo has no module rust_minimall (modules: rust_minimal)"


def test_config_pull_refuses_a_kernel_without_rust(lab, ssh_lab):
    from crossboard.deploy.config_pull import pull_config
    from crossboard.errors import UserError

    board = lab.board("b4", ssh_lab.server().port)  # this host's kernel: CONFIG_RUST is not set
    with pytest.raises(UserError, match="would fail to load with 'Unknown symbol __rust_alloc'"):
        pull_config(board, lab.access)
    assert not (board.boards_dir / "b4.local.yaml").exists()
    assert not (board.boards_dir / "b4.pulled.config").exists()


RELEASE = "6.12.107-crossboard-test"


@pytest.fixture
def boot_board(tmp_path, ssh_lab):
    """A board whose boot partition is a folder holding a stock BeaglePlay extlinux.conf."""
    root = Path(f"/tmp/crossboard-test-{uuid.uuid4().hex}")
    (root / "boot/extlinux").mkdir(parents=True)
    root.chmod(0o1777)  # the login user makes its remote folder here; the boot folder stays root's
    stock = (Path(__file__).parent / "data/beagleplay-extlinux.conf").read_text()
    (root / "boot/extlinux/extlinux.conf").write_text(stock)
    board = fake_built_board(
        tmp_path / "project",
        tmp_path / "out",
        "play",
        ssh_lab.server().port,
        "cbdeploy",
        ssh_lab.key,
        str(root / "remote"),
        boot_partition=str(root / "boot"),
        kernel_release=RELEASE,
    )
    yield board, root / "boot", stock, tmp_path / "out", Access(tmp_path / "known_hosts")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(f"/lib/modules/{RELEASE}", ignore_errors=True)


def test_kernel_install_adds_a_default_label_and_rollback_restores_the_stock_one(boot_board):
    from crossboard.deploy import extlinux
    from crossboard.deploy.kernel_install import install_kernel, rollback

    board, boot, stock, out, access = boot_board
    record = install_kernel(board, out, access)
    conf = (boot / "extlinux/extlinux.conf").read_text()
    lines, default, labels = extlinux.parse(conf)
    assert default == f"crossboard-{RELEASE}" and "Linux microSD" in labels and "BeaglePlay Recovery" in labels
    # compressed, as the stock kernel is (Image.gz), and with no initrd line: the drivers are built in
    assert gzip.decompress((boot / f"crossboard/{RELEASE}/Image.gz").read_bytes()).startswith(b"ARMd fake")
    ours = conf.split(f"\nlabel crossboard-{RELEASE}\n")[1].split("\nlabel ")[0]
    assert f"linux /crossboard/{RELEASE}/Image.gz" in ours and "initrd" not in ours and "root=/dev/mmcblk1p2" in ours
    assert (boot / f"crossboard/{RELEASE}/k3-am625-beagleplay.dtb").is_file()
    assert Path(f"/lib/modules/{RELEASE}/modules.order").is_file()
    assert [p.read_text() for p in (boot / "extlinux").glob("extlinux.conf.crossboard-*")] == [stock]  # backup
    assert not (boot / "Image.gz").exists()  # the stock files are never touched
    assert record["previous_default"] == "Linux microSD"
    assert install_kernel(board, out, access)["previous_default"] == "Linux microSD"  # again: same release, same record

    rollback(board, access)
    assert (boot / "extlinux/extlinux.conf").read_text() == stock
    assert not (boot / "crossboard" / RELEASE).exists() and not Path(f"/lib/modules/{RELEASE}").exists()
    assert not (boot / "crossboard/installed.json").exists()
    with pytest.raises(UserError, match="no crossboard kernel is installed"):
        rollback(board, access)


def test_a_broken_extlinux_conf_is_refused_before_anything_changes(boot_board):
    from crossboard.deploy.kernel_install import install_kernel

    board, boot, stock, out, access = boot_board
    broken = stock.replace("default Linux microSD", "default Linux eMMC")
    (boot / "extlinux/extlinux.conf").write_text(broken)
    with pytest.raises(
        UserError,
        match=r"extlinux.conf is not usable \(`default Linux eMMC` names no label "
        r".*nothing was changed",
    ):
        install_kernel(board, out, access)
    assert (boot / "extlinux/extlinux.conf").read_text() == broken
    assert sorted(p.name for p in boot.rglob("*")) == ["extlinux", "extlinux.conf"]
    assert not Path(f"/lib/modules/{RELEASE}").exists()


def test_rollback_removes_only_what_crossboard_installs_whatever_the_record_says(boot_board, tmp_path):
    from crossboard.deploy.kernel_install import install_kernel, rollback

    board, boot, stock, out, access = boot_board
    install_kernel(board, out, access)
    canary = tmp_path / "precious"
    canary.mkdir()
    record_file = boot / "crossboard/installed.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "kernel_dir": str(canary), "modules_dir": str(canary)}))
    rollback(board, access)
    assert canary.is_dir()
    assert (boot / "extlinux/extlinux.conf").read_text() == stock and not Path(f"/lib/modules/{RELEASE}").exists()


@pytest.mark.parametrize(
    "record, problem",
    [
        ('{"release": "6.12', "not a record crossboard wrote"),
        (
            '{"release": "../../etc", "label": "crossboard-../../etc", "previous_default": "x", "previous_release": "y"}',
            "is not a plain name",
        ),
        (
            '{"release": "6.12.1", "label": "crossboard-6.12.1", "previous_default": "x\\nmenu", "previous_release": "y"}',
            "previous_default is not one line",
        ),
    ],
)
def test_a_damaged_or_hostile_record_is_refused_before_anything_changes(boot_board, record, problem):
    from crossboard.deploy.kernel_install import rollback

    board, boot, stock, out, access = boot_board
    (boot / "crossboard").mkdir()
    (boot / "crossboard/installed.json").write_text(record)
    with pytest.raises(UserError, match=problem):
        rollback(board, access)
    assert (boot / "extlinux/extlinux.conf").read_text() == stock


def test_a_release_that_is_not_a_plain_name_is_never_installed(boot_board):
    from crossboard.deploy.kernel_install import install_kernel

    board, boot, stock, out, access = boot_board
    manifest_file = out / "play/manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "kernel_release": "x/../../../etc"}))
    with pytest.raises(UserError, match=r"the kernel release 'x/../../../etc' is not a plain name"):
        install_kernel(board, out, access)
    assert sorted(p.name for p in boot.rglob("*")) == ["extlinux", "extlinux.conf"]


def test_an_install_that_fails_half_way_is_recorded_first_and_rollback_finishes_it(boot_board):
    from crossboard.deploy.kernel_install import install_kernel, rollback

    board, boot, stock, out, access = boot_board
    (boot / "extlinux/extlinux.conf.crossboard-new").mkdir()  # the new file cannot be written: a failure mid-way
    with pytest.raises(StepFailed, match="installing the kernel failed"):
        install_kernel(board, out, access)
    assert json.loads((boot / "crossboard/installed.json").read_text())["state"] == "installing"
    assert (boot / "extlinux/extlinux.conf").read_text() == stock
    shutil.rmtree(boot / "extlinux/extlinux.conf.crossboard-new")
    rollback(board, access)
    assert (boot / "extlinux/extlinux.conf").read_text() == stock
    assert not (boot / "crossboard").exists() and not Path(f"/lib/modules/{RELEASE}").exists()


SLOW_APP = "#!/bin/sh\necho started\nsleep 30\n"


def handles_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler yet (SigCgt, a hex mask of caught signals)."""
    import signal

    caught = next(line for line in open(f"/proc/{pid}/status") if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("case", ["a board that is down", "an app that runs"])
def test_sigterm_stops_a_deploy_at_once_with_reports_written(lab, ssh_lab, tmp_path, case):
    import os
    import signal
    import subprocess
    import sys
    import time

    from sshd import free_port

    from crossboard import PROJECT_ROOT

    if case == "a board that is down":
        board = lab.board("stopped", free_port())
    else:
        board = lab.board("stopped", ssh_lab.server().port, app_script=SLOW_APP)
    env = {
        **os.environ,
        "CROSSBOARD_BOARDS": str(board.boards_dir),
        "CROSSBOARD_OUT": str(lab.out),
        "CROSSBOARD_KNOWN_HOSTS": str(tmp_path / "known_hosts"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy", "--board", "stopped", "--wait", "15"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    busy = "sleep 30" if case == "an app that runs" else None
    # until the deploy is in the middle of it: its SIGTERM handler set, then the app running or, for the
    # board that is down, 1.5 s of connecting (counted from the handler: a loaded machine starts slowly)
    waited = 0
    for _ in range(200):
        time.sleep(0.1)
        waited += handles_sigterm(process.pid)
        if (
            busy is None
            and waited >= 15
            or busy
            and waited
            and subprocess.run(["pgrep", "-f", busy], capture_output=True).returncode == 0
        ):
            break
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=15)
    assert time.monotonic() - sent < 3, stdout + stderr
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "crossboard: error: interrupted"
    assert json.loads((lab.out / "stopped/deploy.json").read_text())["error"] == "interrupted"
    if busy:  # the app ended with its connection
        for _ in range(30):
            if subprocess.run(["pgrep", "-f", busy], capture_output=True).returncode != 0:
                break
            time.sleep(0.1)
        assert subprocess.run(["pgrep", "-f", busy], capture_output=True).returncode != 0, "the app still runs"


def test_deploy_with_toolchain_deploys_that_profiles_build(lab, ssh_lab, tmp_path):
    """`invoke build --toolchain P` writes out/<board>@<P>/; `invoke deploy --toolchain P` deploys it."""
    from fakes import invoke

    board = lab.board("b5", ssh_lab.server().port)
    shutil.move(lab.out / "b5", lab.out / "b5@trixie-backports")  # as the build with that profile left it
    env = {
        "CROSSBOARD_BOARDS": str(board.boards_dir),
        "CROSSBOARD_OUT": str(lab.out),
        "CROSSBOARD_KNOWN_HOSTS": str(tmp_path / "known_hosts"),
    }
    plain = invoke("deploy", "--board", "b5", "--trust-new-host", **env)
    assert plain.returncode == 2 and "no build for b5" in plain.stderr  # its own profile's build is not there
    deployed = invoke("deploy", "--board", "b5", "--toolchain", "trixie-backports", "--trust-new-host", **env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    report = json.loads((lab.out / "b5@trixie-backports/deploy.json").read_text())
    assert report["ok"] and "apps/hello" in report["sent"]
