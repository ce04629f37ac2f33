"""Bad input of every kind ends in one line naming the file, key or option, exit code 2, and nothing
changed: board files, manifests, options, keys, artifacts. Seconds, no Docker, no root."""

import json
import os
import re
import time

import pytest
from fakes import copy_project, invoke

from crossboard import PROJECT_ROOT, strict_yaml
from crossboard.artifacts.manifest import Artifact, finished_build
from crossboard.board.schema import Connection
from crossboard.errors import UserError
from crossboard.remote.access import Access
from crossboard.remote.connection import resolve
from crossboard.remote.transfer import Upload, push

pytestmark = pytest.mark.fast

ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    "content, message",
    [
        ("description: caf\xe9\n".encode("latin-1"), r"^t\.yaml: not UTF-8 text \(byte 16\)"),
        (b"a: &x [1, 2]\nb: *x\n", r"^t\.yaml:2: not valid YAML: aliases \(\*name\) are not allowed"),
        (ALIAS_BOMB.encode(), r"^t\.yaml:2: not valid YAML: aliases"),
        (b"a: " + b"[" * 2000 + b"]" * 2000 + b"\n", r"^t\.yaml:1: not valid YAML: nested more than 32 levels deep$"),
        (b"a: b\x00c\n", r"^t\.yaml:1: not valid YAML: unacceptable character #x0000: special characters are not allowed$"),
    ],
    ids=["latin-1", "alias", "alias bomb", "deep nesting", "NUL byte"],
)
def test_hostile_or_broken_yaml_is_one_line(tmp_path, content, message):
    (tmp_path / "t.yaml").write_bytes(content)
    started = time.monotonic()
    with pytest.raises(UserError, match=message):
        strict_yaml.load(tmp_path / "t.yaml", "t.yaml")
    assert time.monotonic() - started < 1


GOOD = {
    "status": "done",
    "kernel_release": "6.12.0-x",
    "artifacts": [{"path": "apps/hello", "kind": "app", "sha256": "a" * 64, "size": 1}],
}


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "no build for b: run invoke build --board b"),
        ("", r"not readable as JSON"),
        ("[]", r"not a manifest crossboard wrote \(not a JSON object\)"),
        (json.dumps({**GOOD, "status": None}), r"\(status missing or not a str\)"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "artifacts"}), r"\(artifacts missing or not a list\)"),
        (
            json.dumps({**GOOD, "artifacts": [{"path": "../../etc/passwd", "kind": "app", "sha256": "a" * 64}]}),
            r"artifact '../../etc/passwd': not a path inside the output folder",
        ),
        (json.dumps({**GOOD, "status": "running"}), r"the last build of b did not finish \(running\)"),
        (
            json.dumps({**GOOD, "steps": [{"name": "kernel", "status": "failed"}, {"name": "collect", "status": "done"}]}),
            r"the last build of b did not finish \(step kernel not done\)",
        ),
        (json.dumps({**GOOD, "artifacts": [{**GOOD["artifacts"][0], "size": "1"}]}), r"size, source, vermagic or release"),
    ],
)
def test_a_missing_unfinished_or_damaged_manifest_is_one_line(tmp_path, text, message):
    if text is not None:
        (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(UserError, match=message):
        finished_build(tmp_path, "b")
    (tmp_path / "manifest.json").write_text(json.dumps(GOOD))
    read = finished_build(tmp_path, "b")
    assert read.kernel_release == "6.12.0-x" and read.one("app") == Artifact("apps/hello", "app", 1, "a" * 64)
    assert read.one("app").file_name == "hello" and read.local(read.one("app")) == tmp_path / "apps/hello"


@pytest.mark.parametrize("wait", ["abc", "-5", "nan", "inf"])
def test_a_bad_wait_is_refused_in_one_line(wait):
    done = invoke("deploy", "--wait", wait)
    assert (done.returncode, done.stderr) == (
        2,
        f"crossboard: error: --wait: expected a number of seconds (0 or more), got {wait!r}\n",
    )


def test_deploying_a_board_never_built_is_bad_input(tmp_path):
    done = invoke("deploy", "--board", "qemu-arm64", CROSSBOARD_OUT=str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"crossboard: error: {tmp_path}/qemu-arm64/manifest.json: no build for qemu-arm64: run invoke build --board qemu-arm64"
    )


def test_a_missing_key_file_is_named_at_once(tmp_path):
    with pytest.raises(UserError, match=r"^board.lab: connection.key: no such file .*/keys/gone$"):
        resolve(Connection(host="board.lab", key="keys/gone"), base_dir=tmp_path)


def test_a_missing_artifact_is_named_not_taken_for_a_lost_connection(tmp_path):
    with pytest.raises(UserError, match=r"hello: missing from the build's output"):
        push(None, "/remote", [Upload(tmp_path / "apps/hello", "apps/hello", "a" * 64)])


def test_one_bad_board_file_does_not_hide_the_others(tmp_path):
    boards = copy_project(tmp_path)
    (boards / "broken.yaml").write_text("description: [\n")
    done = invoke("boards", CROSSBOARD_BOARDS=str(boards))
    assert done.returncode == 2
    assert re.search(r"^qemu-arm64 +Virtual board", done.stdout, re.M)
    assert re.search(r"^broken +INVALID: boards/broken.yaml:\d: not valid YAML", done.stdout, re.M), done.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        ({"kernel": {"source": {"debian": "x;touch f"}}}, r"kernel.source.debian: 'x;touch f' does not have the expected form"),
        ({"kernel": {"source": {"git": {"url": "--upload-pack=touch f", "ref": "main"}}}}, r"kernel.source.git.url: "),
        ({"kernel": {"dtbs": ["-x.dtb"]}}, r"kernel.dtbs\[0\]: '-x.dtb' does not have"),
        ({"kernel": {"dtbs": ["ti/../../etc.dtb"]}}, r"kernel.dtbs\[0\]: 'ti/../../etc.dtb' does not have"),
        ({"modules": ["../../outside"]}, r"modules\[0\]: .*/outside is outside the project"),
        ({"deploy": {"boot": {"partition": "/boot/firmware", "extlinux": "extlinux/my extlinux.conf"}}}, r"boot.extlinux: "),
        ({"deploy": {"boot": {"partition": "/boot;saveenv"}}}, r"deploy.boot.partition: '/boot;saveenv' does not have"),
        ({"kernel": {"config": {"fragments": ["/etc/hostname"]}}}, r"kernel.config.fragments\[0\]: /etc/hostname is outside the"),
        ({"kernel": {"config": {"base": "file:/etc/hostname"}}}, r"kernel.config.base: .*/etc/hostname is outside the"),
    ],
    ids=[
        "shell in a package name",
        "an option as git URL",
        "an option as DTB",
        "a DTB outside the tree",
        "a module outside the project",
        "a space in a path U-Boot reads",
        "a command in a path U-Boot reads",
        "a fragment outside the project",
        "a base config outside the project",
    ],
)
def test_values_that_would_reach_a_shell_or_leave_the_project_are_refused(tmp_path, override, message):
    from crossboard.board.load import load_board

    (tmp_path / "outside").mkdir()
    boards = copy_project(tmp_path)
    with pytest.raises(UserError, match=message):
        load_board("qemu-arm64", boards, overrides=override)


def test_secrets_are_written_for_their_owner_alone_and_other_files_follow_the_umask(tmp_path):
    from crossboard.artifacts.files import current_umask, write_atomically
    from crossboard.virtual.keys import ensure_keys

    keys = ensure_keys(tmp_path / "keys")
    assert keys["host"].stat().st_mode & 0o777 == 0o600 and keys["client"].stat().st_mode & 0o777 == 0o600
    write_atomically(tmp_path / "artifact", b"x")
    assert (tmp_path / "artifact").stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert current_umask() == os.umask(current_umask())  # read, not changed


def test_a_password_in_a_tarball_url_is_never_shown():
    from crossboard.pipeline.source import redacted

    assert redacted("https://me:secret@lab.example:8443/l.tar.xz") == "https://me:***@lab.example:8443/l.tar.xz"
    assert redacted("https://lab.example/l.tar.xz") == "https://lab.example/l.tar.xz"


def tar_of(path, members: dict[str, bytes], mode: str = "w"):
    """A tar archive at `path` holding `members` (name -> content) as they are, names unchecked."""
    import io
    import tarfile

    with tarfile.open(path, mode) as packed:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            packed.addfile(info, io.BytesIO(content))
    return path


def test_a_tarball_with_a_member_outside_the_tree_is_refused_in_one_line(tmp_path):
    import hashlib

    from fakes import RecordingRuntime

    from crossboard.board.load import load_board
    from crossboard.pipeline.context import BuildOptions
    from crossboard.pipeline.pipeline import build, build_folders
    from crossboard.settings import Settings

    archive = tar_of(tmp_path / "evil.tar", {"linux/Makefile": b"x\n", "../../escaped": b"x\n"})
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    boards = copy_project(tmp_path)
    board = load_board(
        "qemu-arm64", boards, overrides={"kernel": {"source": {"tarball": {"url": archive.as_uri(), "sha256": sha256}}}}
    )
    settings = Settings(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", base_image="-", debian_mirror="-")
    with pytest.raises(UserError, match=r"^kernel.source.tarball: file://.*evil.tar: .*outside the destination"):
        build(
            board,
            settings,
            BuildOptions(echo=False, app_builder="cargo", only=frozenset({"source"})),
            runtime=RecordingRuntime(build_folders(board, settings)),
        )
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "cache/escaped").exists()
    assert json.loads((tmp_path / "out/qemu-arm64/manifest.json").read_text())["status"] == "failed"


def test_one_default_board_for_every_task_from_the_environment_or_invoke_yaml(tmp_path, monkeypatch):
    from crossboard.settings import Settings

    monkeypatch.delenv("CROSSBOARD_BOARD", raising=False)
    assert Settings.from_environment().board == "qemu-arm64"
    assert Settings.from_environment(config={"board": "beagleplay", "out": str(tmp_path)}).board == "beagleplay"
    assert Settings.from_environment(config={"out": str(tmp_path)}).out_dir == tmp_path
    monkeypatch.setenv("CROSSBOARD_BOARD", "qemu-arm64-uboot")
    assert Settings.from_environment(config={"board": "beagleplay"}).board == "qemu-arm64-uboot"
    monkeypatch.delenv("CROSSBOARD_BOARD")
    (tmp_path / "invoke.yaml").write_text("crossboard:\n  board: qemu-arm64-uboot\n")  # on 127.0.0.1
    for task in (["build", "--dry-run"], ["rollback"]):
        done = invoke(
            *task,
            INVOKE_RUNTIME_CONFIG=str(tmp_path / "invoke.yaml"),
            CROSSBOARD_KNOWN_HOSTS=str(tmp_path / "known_hosts"),
            timeout=60,
        )
        assert "qemu-arm64-uboot" in done.stdout + done.stderr or "127.0.0.1:2223" in done.stderr, done


def test_config_pull_edits_the_local_override_keeping_comments_and_words(tmp_path):
    from crossboard.deploy.config_pull import pointed_local_override

    local = tmp_path / "beagleplay.local.yaml"
    local.write_text(
        "# my lab's board\nconnection:\n  host: play-3.lab  # the one by the window\n"
        "description: yes\nkernel:\n  localversion: -old\n"
    )
    edited = pointed_local_override(local, "beagleplay.pulled.config", "-ti-arm64-r54").decode()
    assert edited.startswith("# my lab's board\n") and "# the one by the window" in edited
    assert "description: yes\n" in edited
    assert "base: file:beagleplay.pulled.config" in edited and "localversion: -ti-arm64-r54" in edited
    local.write_text("kernel: [\n")
    with pytest.raises(UserError, match=r"beagleplay.local.yaml: not valid YAML, so it was left as it is"):
        pointed_local_override(local, "x.config", "")


def test_a_lab_keeps_its_board_files_and_host_keys_where_invoke_yaml_says(tmp_path, monkeypatch):
    from crossboard.settings import Settings

    for name in ("CROSSBOARD_BOARDS", "CROSSBOARD_KNOWN_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    chosen = Settings.from_environment(config={"boards": "lab/boards", "known_hosts": str(tmp_path / "keys")})
    assert chosen.boards_dir == PROJECT_ROOT / "lab/boards" and chosen.known_hosts == tmp_path / "keys"
    assert Access(chosen.known_hosts, trust_new_host=True).known_hosts == tmp_path / "keys"
    assert Settings.from_environment().known_hosts == PROJECT_ROOT / ".crossboard/known_hosts"
    boards = copy_project(tmp_path)
    for file in boards.glob("*.yaml"):
        file.unlink()
    (boards / "play-7.yaml").write_text((PROJECT_ROOT / "boards/qemu-arm64.yaml").read_text())
    (tmp_path / "invoke.yaml").write_text(f"crossboard:\n  boards: {boards}\n")
    listed = invoke("boards", INVOKE_RUNTIME_CONFIG=str(tmp_path / "invoke.yaml"), timeout=60)
    assert listed.returncode == 0 and listed.stdout.split("  ")[0] == "play-7" and len(listed.stdout.splitlines()) == 1, listed


def test_an_unknown_toolchain_profile_is_one_line_naming_the_known_ones():
    for arguments in (["toolchain", "--profile", "sid"], ["build", "--toolchain", "sid", "--dry-run"]):
        result = invoke(*arguments)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().endswith("no toolchain profile 'sid' (profiles: trixie, trixie-backports)"), result.stderr


# The audit of 2026-12-07 (L5): seven inputs that ended in "internal error"; each is one line now.


def test_an_ssh_config_port_that_is_not_a_number_is_one_line(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host board\n  Port abc\n")
    with pytest.raises(UserError, match=r"ssh_config: Host board: Port 'abc' is not a number"):
        resolve(Connection(host="board"), tmp_path, config)


def test_an_invoke_yaml_crossboard_section_that_is_not_a_mapping_is_one_line():
    from crossboard.settings import Settings

    with pytest.raises(UserError, match="invoke.yaml: crossboard: is list, not a mapping of settings"):
        Settings.from_environment(config=["board", "qemu-arm64"])  # type: ignore[arg-type]


def test_urls_are_shown_without_their_secrets_whatever_their_port():
    from crossboard.pipeline.source import redacted

    assert redacted("http://me:pw@host:port/x.tar.xz") == "http://me:***@host:port/x.tar.xz"  # was a ValueError
    assert redacted("https://ci:glpat-SECRET123@git.lab/linux.git") == "https://ci:***@git.lab/linux.git"
    assert redacted("https://glpat-SECRET123@git.lab/linux.git") == "https://***@git.lab/linux.git"
    shown = redacted("https://s3.lab/l.tar.xz?X-Amz-Signature=abc123&private_token=SECRET")
    assert shown == "https://s3.lab/l.tar.xz?X-Amz-Signature=***&private_token=***" and "SECRET" not in shown


def test_a_git_source_is_planned_without_its_credentials(tmp_path):
    from crossboard.board.load import load_board
    from crossboard.pipeline.source import describe, plan_source

    boards = copy_project(tmp_path)
    git = {"url": "https://ci:glpat-SECRET123@git.lab/linux.git?private_token=SECRET", "ref": "v6.12"}
    board = load_board("qemu-arm64", boards, overrides={"kernel": {"source": {"git": git}}})
    shown = " ".join(describe(board.spec.kernel.source, plan_source(board, tmp_path / "cache")))
    assert "SECRET" not in shown and "https://ci:***@git.lab/linux.git" in shown


@pytest.mark.parametrize(
    "text", ["[]", '{"board": "b", "steps": [{"name": "kernel", "colour": "red"}]}', '{"board": "b", "steps": [{}]}']
)
def test_an_earlier_manifest_crossboard_did_not_write_is_as_none(tmp_path, text):
    from crossboard.artifacts.manifest import earlier_manifest

    (tmp_path / "manifest.json").write_text(text)
    earlier_manifest(tmp_path, "b")  # no TypeError, no AttributeError


def test_a_devel_bundle_holding_a_file_and_a_file_inside_it_is_one_line(tmp_path):
    from crossboard.pipeline.source import _extract

    bundle = tar_of(tmp_path / "bundle.tar.gz", {"x": b"z", "x/y": b"z"}, "w:gz")
    with pytest.raises(UserError, match=r"kernel.source.devel: .*bundle.tar.gz: .*; nothing was kept"):
        _extract(bundle, tmp_path / "partial", "kernel.source.devel", str(bundle))


def test_a_devel_bundle_whose_tools_are_not_a_mapping_is_one_line(tmp_path):
    from crossboard.pipeline.devel import INFO_NAME, read_info

    info = {
        "board": "b",
        "toolchain": "trixie",
        "image": "i",
        "kernel_release": "r",
        "kernel_build_id": "",
        "builds_on": "x86_64",
    }
    (tmp_path / INFO_NAME).write_text(json.dumps({**info, "tools": ["rustc 1.85.1"]}))
    with pytest.raises(UserError, match=f"{INFO_NAME} is damaged \\(tools is not a mapping"):
        read_info(tmp_path, "bundle.tar.gz")


def test_a_kernel_makefile_with_a_suffix_on_its_patchlevel_is_read(tmp_path):
    from crossboard.pipeline.source import tree_version

    (tmp_path / "Makefile").write_text("VERSION = 7\nPATCHLEVEL = 4-rc\nSUBLEVEL = 0\nEXTRAVERSION = -rc1\n")
    assert tree_version(tmp_path) == (7, 4, 0)


def test_a_devel_bundle_with_a_damaged_gzip_crc_is_refused_and_nothing_kept(tmp_path):
    """The audit's r02: tarfile stops at the end-of-archive marker, so a bad CRC went unseen."""
    from crossboard.pipeline.source import _extract

    bundle = tar_of(tmp_path / "bundle.tar.gz", {"tree/Makefile": b"all:\n"}, "w:gz")
    damaged = bytearray(bundle.read_bytes())
    damaged[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    bundle.write_bytes(bytes(damaged))
    with pytest.raises(UserError, match=r"kernel.source.devel: .*bundle.tar.gz: .*CRC.*; nothing was kept"):
        _extract(bundle, tmp_path / "partial", "kernel.source.devel", str(bundle))


def test_a_bundle_that_unpacks_past_the_limit_is_refused_before_it_is_unpacked(tmp_path, monkeypatch):
    from crossboard.pipeline import source

    bundle = tar_of(tmp_path / "bundle.tar.gz", {"tree/big": b"\0" * 4096}, "w:gz")
    monkeypatch.setattr(source, "UNPACKED_LIMIT", 1024)
    with pytest.raises(UserError, match="unpacks to 0 MiB, over the 0 GiB a kernel tree takes"):
        source._extract(bundle, tmp_path / "partial", "kernel.source.devel", str(bundle))
    assert not (tmp_path / "partial/tree/big").exists()


# The re-try of the audit's bad inputs (2026-12-07, after its fixes): the ones that still were not one line.


def test_an_ssh_config_port_out_of_range_is_one_line_not_another_port(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host board\n  Port 99999\n")  # Python would dial 34463
    with pytest.raises(UserError, match=r"ssh_config: Host board: Port 99999 is not a port \(1-65535\)"):
        resolve(Connection(host="board"), tmp_path, config)


def test_an_ssh_config_include_of_a_quoted_path_with_a_space_is_followed(tmp_path):
    (tmp_path / "my conf").write_text("Host board\n  HostName 192.0.2.7\n  Port 2200\n")
    config = tmp_path / "ssh_config"
    config.write_text(f'Include "{tmp_path}/my conf"\n')
    target = resolve(Connection(host="board"), tmp_path, config)
    assert (target.hostname, target.port) == ("192.0.2.7", 2200)


def test_an_ssh_config_identity_file_that_is_not_a_key_is_one_line(tmp_path):
    (tmp_path / "garbage-id").write_text("this is not a key\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host board\n  IdentityFile {tmp_path}/garbage-id\n")
    with pytest.raises(
        UserError, match=r"^board: .*ssh_config: IdentityFile: .*garbage-id is not a private key paramiko can use"
    ):
        resolve(Connection(host="board"), tmp_path, config)


def test_a_setting_that_names_a_file_for_a_folder_or_the_other_way_round_is_one_line(tmp_path, monkeypatch):
    from crossboard.settings import Settings

    (tmp_path / "outfile").write_text("x")
    monkeypatch.setenv("CROSSBOARD_OUT", str(tmp_path / "outfile"))
    with pytest.raises(UserError, match=r"^crossboard.out \(CROSSBOARD_OUT or invoke.yaml\): .*outfile: not a folder$"):
        Settings.from_environment()
    monkeypatch.delenv("CROSSBOARD_OUT")
    with pytest.raises(UserError, match=r"^crossboard.known_hosts .*: a folder$"):
        Settings.from_environment(config={"known_hosts": str(tmp_path)})


def test_boards_and_deploy_name_what_is_missing_first():
    listed = invoke("boards", CROSSBOARD_BOARDS="/nonexistent")
    assert listed.returncode == 2 and listed.stderr.strip().endswith("/nonexistent: no such folder")
    deployed = invoke("deploy", "--board", "nosuch")
    assert deployed.returncode == 2 and "boards/nosuch.yaml: no such board" in deployed.stderr
