"""Board files: every malformed one gives one line naming file, line and key, and exit code 2."""

from pathlib import Path

import pytest
from fakes import invoke

from crossboard import PROJECT_ROOT
from crossboard.board.load import board_names, expand_board_names, load_board, source_override
from crossboard.errors import UserError, exit_code_for

pytestmark = pytest.mark.fast

VALID = """\
description: A test board
arch: arm64
targets:
  glibc: "2.41"
kernel:
  source:
    debian: linux-source-6.12
  config:
    base: allnoconfig
    fragments: [fragments/a.config]
  dtbs: [ti/k3-am625-beagleplay.dtb]
modules: [modules/m]
apps:
  - path: apps/a
connection:
  host: 127.0.0.1
  port: 22
  sudo: true
  host_key_policy: strict
deploy:
  remote_dir: /tmp/x
"""


@pytest.fixture
def boards_dir(tmp_path):
    boards = tmp_path / "boards"
    (boards / "fragments").mkdir(parents=True)
    (boards / "fragments" / "a.config").write_text("CONFIG_RUST=y\n")
    (tmp_path / "modules" / "m").mkdir(parents=True)
    (tmp_path / "apps" / "a").mkdir(parents=True)
    (tmp_path / "apps" / "a" / "Cargo.toml").write_text("[package]\n")
    return boards


def write_board(boards_dir: Path, text: str, name: str = "t") -> None:
    (boards_dir / f"{name}.yaml").write_text(text)


def test_valid_board_loads(boards_dir):
    write_board(boards_dir, VALID)
    board = load_board("t", boards_dir)
    assert board.spec.connection.sudo is True
    assert board.spec.kernel.source.kind == "debian"
    assert board.fragment_paths() == [boards_dir / "fragments" / "a.config"]


# (what is wrong, replace this, with this, the message expected)
MALFORMED = [
    ("unknown top-level key", "arch: arm64\n", "arch: arm64\ncolour: red\n", "boards/t.yaml:3: colour: unknown key"),
    (
        "unknown nested key",
        "    base: allnoconfig\n",
        "    base: allnoconfig\n    extra: 1\n",
        "boards/t.yaml:10: kernel.config.extra: unknown key",
    ),
    ("missing required key", "description: A test board\n", "", "boards/t.yaml:1: description: required key is missing"),
    (
        "missing kernel source",
        "  source:\n    debian: linux-source-6.12\n",
        "",
        "boards/t.yaml:5: kernel.source: required key is missing",
    ),
    (
        "port is text",
        "  port: 22\n",
        "  port: twenty-two\n",
        "boards/t.yaml:17: connection.port: expected a plain decimal number, got 'twenty-two'",
    ),
    ("YAML 1.1 no", "  sudo: true\n", "  sudo: no\n", "boards/t.yaml:18: connection.sudo: expected true or false, got 'no'"),
    ("YAML 1.1 on", "  sudo: true\n", "  sudo: on\n", "boards/t.yaml:18: connection.sudo: expected true or false, got 'on'"),
    (
        "octal-looking number",
        "  port: 22\n",
        "  port: 0755\n",
        "boards/t.yaml:17: connection.port: expected a plain decimal number, got '0755'",
    ),
    (
        "unquoted version",
        '  glibc: "2.41"\n',
        "  glibc: 2.41\n",
        "boards/t.yaml:4: targets.glibc: expected text, got 2.41: put it in quotes",
    ),
    (
        "two kernel sources",
        "    debian: linux-source-6.12\n",
        "    debian: linux-source-6.12\n    path: /usr/src/linux\n",
        "boards/t.yaml:6: kernel.source: give exactly one of debian, tarball, git, path, devel (got debian, path)",
    ),
    (
        "devel bundle that is not there",
        "    debian: linux-source-6.12\n",
        "    devel: out/x/kernel-devel-6.12.tar.gz\n",
        "boards/t.yaml:7: kernel.source.devel: no such file out/x/kernel-devel-6.12.tar.gz (invoke build writes one",
    ),
    (
        "no config for a kernel to build",
        "  config:\n    base: allnoconfig\n    fragments: [fragments/a.config]\n",
        "",
        "boards/t.yaml:5: kernel: config is required (a devel bundle source is the one kind that needs none)",
    ),
    (
        "a host and a labgrid place",
        "  host: 127.0.0.1\n",
        "  host: 127.0.0.1\n  labgrid: {place: bench-1}\n",
        "boards/t.yaml:15: connection: give exactly one of host and labgrid (a place that names the host)",
    ),
    (
        "bad sha256",
        "    debian: linux-source-6.12\n",
        "    tarball: {url: 'http://x/l.tar.xz', sha256: abc}\n",
        "boards/t.yaml:7: kernel.source.tarball.sha256: 'abc' does not have the expected form",
    ),
    (
        "missing fragment",
        "[fragments/a.config]",
        "[fragments/a.config, fragments/gone.config]",
        "boards/t.yaml:10: kernel.config.fragments[1]: no such file boards/fragments/gone.config",
    ),
    ("duplicate key", "arch: arm64\n", "arch: arm64\narch: arm64\n", "boards/t.yaml:3: arch: given twice"),
    ("not YAML", "arch: arm64\n", "arch: [arm64\n", "boards/t.yaml:3: not valid YAML"),
    ("unsupported arch", "arch: arm64\n", "arch: x86\n", "boards/t.yaml:2: arch: Input should be 'arm64'"),
    (
        "missing module folder",
        "modules: [modules/m]",
        "modules: [modules/m, modules/gone]",
        "boards/t.yaml:12: modules[1]: no such folder modules/gone",
    ),
    (
        "app without Cargo.toml",
        "  - path: apps/a\n",
        "  - path: modules/m\n",
        "boards/t.yaml:14: apps[0].path: no Cargo.toml in modules/m",
    ),
    (
        "unknown host key policy",
        "  host_key_policy: strict\n",
        "  host_key_policy: auto-add\n",
        "boards/t.yaml:19: connection.host_key_policy: Input should be 'strict' or 'trust-new'",
    ),
    (
        "dtb without .dtb",
        "[ti/k3-am625-beagleplay.dtb]",
        "[ti/k3-am625-beagleplay]",
        "boards/t.yaml:11: kernel.dtbs[0]: 'ti/k3-am625-beagleplay' does not have the expected form",
    ),
    (
        "list for a mapping",
        "deploy:\n  remote_dir: /tmp/x\n",
        "deploy: [/tmp/x]\n",
        "boards/t.yaml:20: deploy: Input should be a valid dictionary",
    ),
    (
        "port out of range",
        "  port: 22\n",
        "  port: 70000\n",
        "boards/t.yaml:17: connection.port: Input should be less than or equal to 65535",
    ),
    (
        "u-boot without a stock kernel",
        "  remote_dir: /tmp/x\n",
        "  remote_dir: /tmp/x\nvirtual:\n  boot: u-boot\n",
        "boards/t.yaml:22: virtual: stock_kernel is given exactly when boot is u-boot",
    ),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_board_gives_one_line(boards_dir, case):
    _, old, new, expected = case
    assert old in VALID
    write_board(boards_dir, VALID.replace(old, new, 1))
    with pytest.raises(UserError) as raised:
        load_board("t", boards_dir)
    message = str(raised.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert exit_code_for(raised.value) == 2


def test_board_with_no_file(boards_dir):
    write_board(boards_dir, VALID, name="real")
    with pytest.raises(UserError, match=r"^boards/nope.yaml: no such board \(known boards: real\)$"):
        load_board("nope", boards_dir)


def test_local_override_replaces_kernel_source(boards_dir):
    write_board(boards_dir, VALID)
    (boards_dir / "t.local.yaml").write_text("kernel:\n  source:\n    path: /srv/linux\n")
    board = load_board("t", boards_dir)
    assert board.spec.kernel.source.kind == "path"
    assert board.spec.kernel.config.base == "allnoconfig"


def test_mistake_in_local_override_names_that_file(boards_dir):
    write_board(boards_dir, VALID)
    (boards_dir / "t.local.yaml").write_text("connection:\n  sudo: yes\n")
    with pytest.raises(UserError, match=r"^boards/t.local.yaml:2: connection.sudo: expected true or false"):
        load_board("t", boards_dir)


def test_the_shipped_boards_and_groups_are_valid():
    boards = PROJECT_ROOT / "boards"
    assert board_names(boards) == ["beagleplay", "qemu-arm64", "qemu-arm64-uboot"]
    for name in board_names(boards):
        assert load_board(name, boards).spec.arch == "arm64"
    assert expand_board_names("virtual", boards) == ["qemu-arm64", "qemu-arm64-uboot"]


def test_invoke_reports_a_bad_board_in_one_line_with_exit_code_2(boards_dir):
    write_board(boards_dir, VALID.replace("  sudo: true\n", "  sudo: off\n"))
    result = invoke("boards", CROSSBOARD_BOARDS=str(boards_dir), timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "crossboard: error: boards/t.yaml:18: connection.sudo: expected true or false, got 'off' "
        "(YAML 1.1 words like no/on/yes/off are not booleans here)"
    ]
    assert "Traceback" not in result.stderr


def test_a_group_stands_for_its_boards_in_order_each_once(boards_dir):
    write_board(boards_dir, VALID, "a")
    write_board(boards_dir, VALID, "b")
    (boards_dir / "lab.group.yaml").write_text("description: the lab\nboards: [b, a]\n")
    assert expand_board_names("lab", boards_dir) == ["b", "a"]
    assert expand_board_names("a, lab,,b", boards_dir) == ["a", "b"]
    assert board_names(boards_dir) == ["a", "b"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("description: the lab\nboards: [a, gone]\n", "boards/lab.group.yaml:2: boards[1]: no board file gone.yaml"),
        ("description: the lab\nboards: []\n", "boards/lab.group.yaml:2: boards: List should have at least 1 item"),
        ("description: the lab\nboards: [a]\nmembers: [a]\n", "boards/lab.group.yaml:3: members: unknown key"),
    ],
)
def test_a_bad_group_file_is_one_line_naming_it(boards_dir, text, message):
    write_board(boards_dir, VALID, "a")
    (boards_dir / "lab.group.yaml").write_text(text)
    with pytest.raises(UserError) as error:
        expand_board_names("a,lab", boards_dir)
    assert str(error.value).startswith(message)


def test_the_board_hash_covers_the_local_override_and_the_command_line(tmp_path):
    from fakes import copy_project

    boards_dir = copy_project(tmp_path)
    plain = load_board("qemu-arm64", boards_dir).sha256
    overridden = load_board("qemu-arm64", boards_dir, overrides=source_override(f"path:{tmp_path}")).sha256
    (boards_dir / "qemu-arm64.local.yaml").write_text("kernel:\n  localversion: -mine\n")
    local = load_board("qemu-arm64", boards_dir).sha256
    assert len({plain, overridden, local}) == 3


def test_the_base_image_given_to_invoke_toolchain_is_used_by_later_commands(tmp_path, monkeypatch):
    from crossboard.settings import DEFAULT_BASE_IMAGE, Settings

    monkeypatch.setenv("CROSSBOARD_CACHE", str(tmp_path))
    monkeypatch.delenv("CROSSBOARD_BASE_IMAGE", raising=False)
    assert Settings.from_environment().base_image == DEFAULT_BASE_IMAGE
    Settings.from_environment(base_image="debian:trixie").remember_toolchain_choice()
    assert Settings.from_environment().base_image == "debian:trixie"
    monkeypatch.setenv("CROSSBOARD_BASE_IMAGE", "lab/trixie:1")
    assert Settings.from_environment().base_image == "lab/trixie:1"


def test_every_hardware_board_has_a_twin_and_a_virtual_board_has_none(tmp_path):
    from crossboard.errors import UserError
    from crossboard.virtual.twin import TWIN_PORTS, twin_of, what_a_twin_cannot_show

    play = twin_of(load_board("beagleplay"))
    connection = play.spec.connection
    assert (connection.host, connection.user, connection.sudo, connection.host_key_policy) == (
        "127.0.0.1",
        "debian",
        True,
        "strict",
    )
    assert connection.port in TWIN_PORTS and connection.key == ".crossboard/virtual/beagleplay/id_ed25519"
    assert play.name == "beagleplay" and play.spec.deploy.boot is None and play.spec.virtual.memory_mb == 2048
    assert play.spec.kernel == load_board("beagleplay").spec.kernel  # its own build, unchanged
    assert "k3-am625-beagleplay.dtb" in what_a_twin_cannot_show(play)
    with pytest.raises(UserError, match="--twin: qemu-arm64 is a virtual board already"):
        twin_of(load_board("qemu-arm64"))


def test_the_toolchain_profile_is_named_and_must_hold_the_kernel_source(boards_dir):
    write_board(boards_dir, VALID.replace("arch: arm64\n", "arch: arm64\ntoolchain: trixie-backports\n"))
    board = load_board("t", boards_dir)
    assert board.profile.name == "trixie-backports" and board.build_name == "t"

    write_board(boards_dir, VALID.replace("arch: arm64\n", "arch: arm64\ntoolchain: sid\n"))
    with pytest.raises(
        UserError, match=r"^boards/t.yaml:3: toolchain: no toolchain profile 'sid' \(profiles: trixie, trixie-backports\)"
    ):
        load_board("t", boards_dir)

    write_board(boards_dir, VALID.replace("linux-source-6.12", "linux-source-7.3"))
    with pytest.raises(
        UserError,
        match=r"^boards/t.yaml:7: kernel.source.debian: toolchain profile trixie does not hold linux-source-7.3 "
        r"\(it holds linux-source-6.12\)",
    ):
        load_board("t", boards_dir)


def test_another_profile_builds_into_folders_of_its_own(boards_dir):
    write_board(boards_dir, VALID)
    board = load_board("t", boards_dir)
    assert board.with_toolchain("trixie") is board  # the board's own profile: its own folders
    other = board.with_toolchain("trixie-backports")
    assert other.build_name == "t@trixie-backports" and other.name == "t" and other.spec.toolchain == "trixie-backports"
    with pytest.raises(UserError, match=r"^--toolchain sid: no toolchain profile 'sid'"):
        board.with_toolchain("sid")
    write_board(
        boards_dir,
        VALID.replace("linux-source-6.12", "linux-source-7.3").replace(
            "arch: arm64\n", "arch: arm64\ntoolchain: trixie-backports\n"
        ),
    )
    with pytest.raises(UserError, match=r"^--toolchain trixie: toolchain profile trixie does not hold linux-source-7.3"):
        load_board("t", boards_dir).with_toolchain("trixie")
