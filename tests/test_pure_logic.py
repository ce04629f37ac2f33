"""Pure logic, no engine needed: Kconfig reading and diagnosis, tool versions, ELF facts."""

from pathlib import Path

import pytest

from crossboard import kconfig
from crossboard.artifacts.files import highest_glibc, vermagic_of, write_atomically
from crossboard.pipeline.toolcheck import ToolVerdict
from crossboard.versions import version_in

pytestmark = pytest.mark.fast


def test_kconfig_reads_set_unset_and_strings():
    values = kconfig.parse('CONFIG_RUST=y\n# CONFIG_MODVERSIONS is not set\nCONFIG_LOCALVERSION="-x"\n# comment\n')
    assert values == {"CONFIG_RUST": "y", "CONFIG_MODVERSIONS": "n", "CONFIG_LOCALVERSION": '"-x"'}


def test_unmet_symbols_treat_absent_as_n():
    requested = {"CONFIG_RUST": "y", "CONFIG_MODVERSIONS": "n", "CONFIG_A": "m"}
    final = {"CONFIG_MODVERSIONS": "y", "CONFIG_A": "m"}
    assert kconfig.unmet(requested, final) == {"CONFIG_RUST": ("y", "n"), "CONFIG_MODVERSIONS": ("n", "y")}


@pytest.mark.parametrize(
    "final, reason",
    [
        ({"CONFIG_MODVERSIONS": "y", "CONFIG_HAVE_RUST": "y"}, "CONFIG_MODVERSIONS is set"),
        ({"CONFIG_RANDSTRUCT": "y", "CONFIG_DEBUG_INFO_BTF": "y"}, "CONFIG_RANDSTRUCT, CONFIG_DEBUG_INFO_BTF are set"),
        ({}, "HAVE_RUST is not set"),
        ({"CONFIG_HAVE_RUST": "y"}, "RUST_IS_AVAILABLE is not set"),
        ({"CONFIG_HAVE_RUST": "y", "CONFIG_RUST_IS_AVAILABLE": "y"}, "a dependency of RUST"),
    ],
)
def test_why_rust_is_missing(final, reason):
    assert reason in kconfig.why_no_rust(final)


def test_unmet_description_puts_rust_first_with_its_reason():
    final = {"CONFIG_MODVERSIONS": "y", "CONFIG_HAVE_RUST": "y"}
    text = kconfig.describe_unmet({"CONFIG_A": ("y", "n"), "CONFIG_RUST": ("y", "n")}, final)
    assert text.startswith("CONFIG_RUST=y requested but the final .config has n; CONFIG_A=y")
    assert text.endswith(
        "Why RUST: CONFIG_MODVERSIONS is set and Rust cannot coexist with it: add '# CONFIG_MODVERSIONS is not set' to a fragment"
    )


def test_versions_and_verdicts():
    assert version_in("rustc 1.85.1 (4eb161250 2025-03-15)") == (1, 85, 1)
    assert version_in("Debian clang version 19.1.7 (3+b1)") == (19, 1, 7)
    assert version_in("bindgen 0.71") == (0, 71, 0)
    old = ToolVerdict("rustc", (1, 78, 0), (1, 76, 0))
    assert old.too_old and "older than the kernel's minimum 1.78.0" in old.message()
    assert ToolVerdict("rustc", (1, 78, 0), (1, 85, 1)).newer
    assert not ToolVerdict("llvm", (13, 0, 1), (19, 1, 7)).newer
    assert ToolVerdict("bindgen", (0, 65, 1), None).too_old


def test_highest_glibc_from_readelf():
    text = "  0x0010: Name: GLIBC_2.17  Flags: none\n  0x0020: Name: GLIBC_2.34\n  Name: GLIBC_2.2.5\n"
    assert highest_glibc(text) == (2, 34)
    assert highest_glibc("Version needs section '.gnu.version_r' contains 0 entries") is None


def test_vermagic_from_modinfo(tmp_path):
    module = tmp_path / "m.ko"
    module.write_bytes(b"\x7fELF...\0license=GPL\0vermagic=6.12.107-crossboard SMP mod_unload aarch64\0name=m\0")
    assert vermagic_of(module) == "6.12.107-crossboard SMP mod_unload aarch64"


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    write_atomically(target, b"old")
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_release_split_and_rust_verdicts():
    from crossboard.deploy.config_pull import rust_problem, split_release

    assert split_release("6.12.43-ti-arm64-r54") == ((6, 12, 43), "-ti-arm64-r54")
    assert split_release("6.12.107-crossboard") == ((6, 12, 107), "-crossboard")
    assert "arm64 Rust needs Linux >= 6.9" in rust_problem("6.6.58-ti-arm64-r20", {"CONFIG_RUST": "y"})
    assert "Unknown symbol __rust_alloc" in rust_problem("6.12.43-ti-arm64-r54", {"CONFIG_HAVE_RUST": "y"})
    assert rust_problem("6.12.43-ti-arm64-r54", {"CONFIG_RUST": "y"}) is None


def test_app_glibc_against_the_board():
    from crossboard.deploy.preflight import BoardFacts, app_problem

    facts = BoardFacts(release="6.12.1", rust=True, glibc=(2, 36), user="debian", loaded=frozenset())
    assert "needs GLIBC_2.39 but the board has glibc 2.36" in app_problem("hello", "2.39", facts)
    assert app_problem("hello", "2.34", facts) is None
    assert app_problem("hello", "", facts) is None  # static: needs no glibc


STOCK_EXTLINUX = (Path(__file__).parent / "data/beagleplay-extlinux.conf").read_text()


def test_our_label_becomes_the_default_and_copies_the_stock_command_line():
    from crossboard.deploy import extlinux

    new, stock = extlinux.add_default_label(
        STOCK_EXTLINUX,
        "crossboard-6.12.107-crossboard",
        "/crossboard/6.12.107-crossboard/Image",
        "/crossboard/6.12.107-crossboard/k3-am625-beagleplay.dtb",
    )
    assert stock == "Linux microSD"
    lines, default, labels = extlinux.parse(new)
    assert default == "crossboard-6.12.107-crossboard"
    assert list(labels) == [
        "crossboard-6.12.107-crossboard",
        "Linux microSD",
        "BeaglePlay Recovery",
        "BeaglePlay disable BCFSERIAL",
    ]
    ours = "\n".join(labels[default].lines(lines))
    assert "append console=ttyS2,115200n8 root=/dev/mmcblk1p2 ro rootfstype=ext4 resume=/dev/mmcblk1p3" in ours
    assert "fdt /crossboard/6.12.107-crossboard/k3-am625-beagleplay.dtb" in ours and "initrd" not in ours
    assert extlinux.remove_label(new, default, stock) == STOCK_EXTLINUX  # byte for byte


@pytest.mark.parametrize(
    "broken, reason",
    [
        (STOCK_EXTLINUX.replace("default Linux microSD", "default Linux eMMC"), "names no label"),
        (STOCK_EXTLINUX.replace("default Linux microSD\n", ""), "no `default` line"),
        ("timeout 5\n", "no `label` entries"),
        (STOCK_EXTLINUX.replace("    kernel /Image.gz\n", "", 1), "has no kernel line"),
    ],
)
def test_a_broken_extlinux_conf_is_refused(broken, reason):
    from crossboard.deploy import extlinux

    with pytest.raises(ValueError, match=reason):
        extlinux.add_default_label(broken, "crossboard-x", "/x/Image", None)


def test_a_menu_whose_one_label_is_ours_is_refused_saying_so():
    from crossboard.deploy import extlinux

    only_ours = "default crossboard-x\nlabel crossboard-x\n    linux /crossboard/x/Image\n"
    with pytest.raises(ValueError, match="its one label is crossboard's own crossboard-x, so no stock kernel would be left"):
        extlinux.add_default_label(only_ours, "crossboard-x", "/x/Image", None)  # was: min() arg is an empty sequence


def test_progress_says_done_of_expected_elapsed_and_left_and_counts_kbuild_lines():
    import io

    from crossboard.progress import Progress, size

    out = io.StringIO()
    progress = Progress("[b] kernel", expected=4, mode="lines", every=0.0, out=out)
    progress.feed(b"  CC      init/main.o\n  RUSTC L rust/core.o\nmake[1]: Entering directory\n  LD [M]  a.ko\n  AR   ")
    assert progress.done == 3  # the last line is not whole yet
    progress.feed(b"   lib/lib.a\n")
    assert progress.done == 4
    assert out.getvalue().splitlines()[-1].startswith("  [b] kernel: 4 of ~4 objects (100%), 0 s")
    first = Progress("[b] upload", unit="", pattern=None, render=size, mode="off")
    first.set(3 << 20)
    assert first.describe() == "[b] upload: 3.0 MiB, 0 s (no estimate yet: first run)"


def test_the_build_id_is_read_from_kernel_notes_and_from_an_elf_file():
    import re
    import subprocess
    import sys

    from fake_ssh import kernel_notes

    from crossboard.artifacts.files import build_id_in_hex_notes, build_id_in_notes, build_id_of_elf

    assert (
        build_id_in_notes(kernel_notes("0123456789abcdef0123456789abcdef01234567")) == "0123456789abcdef0123456789abcdef01234567"
    )
    assert build_id_in_notes(kernel_notes("")) == "" and build_id_in_notes(b"\x01\x02") == ""
    assert build_id_in_hex_notes(kernel_notes("beef" * 5).hex() + "\n") == "beef" * 5
    assert build_id_in_hex_notes("od: /sys/kernel/notes: Permission denied") == ""
    # a real ELF file with a build ID: the one `file` reports for this machine's python
    binary = Path(sys.executable).resolve()
    reported = re.search(
        r"BuildID\[\w+\]=([0-9a-f]+)",
        subprocess.run(["file", "-L", str(binary)], capture_output=True, text=True, check=True).stdout,
    )
    assert reported and build_id_of_elf(binary) == reported[1]
    assert build_id_of_elf(Path(__file__)) == ""  # not ELF


def test_a_port_whose_last_connections_linger_is_free_for_the_next_board_and_a_listened_one_is_not():
    import socket

    from crossboard.virtual.qemu import _port_free

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as QEMU's port forward does
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not _port_free(port)
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the board's side closes first: its end of the port lingers in TIME_WAIT
            client.recv(1)
    assert _port_free(port)  # as after qemu.down: qemu.up right after must not be refused


def test_editor_files_name_host_paths_the_longest_container_folder_winning():
    from crossboard.pipeline.ide import on_host_paths

    places = {
        "/crossboard/work/modules/hello_rust": "/home/me/project/modules/hello_rust",
        "/crossboard/work": "/home/me/.cache/crossboard/work/b/1234",
        "/crossboard/build": "/home/me/.cache/crossboard/build/b",
    }
    data = {
        "crates": [
            {"root_module": "/crossboard/work/modules/hello_rust/hello_rust.rs", "cfg": ["CONFIG_RUST"]},
            {"proc_macro_dylib_path": "/crossboard/build/kernel/rust/libmacros.so", "edition": "2021"},
        ],
        "command": "clang -I/crossboard/build/kernel/include -o /crossboard/work/modules/hello_rust_extra.o",
        "untouched": ["/crossboard/workshop", "/usr/include", 3],
    }
    assert on_host_paths(data, places) == {
        "crates": [
            {"root_module": "/home/me/project/modules/hello_rust/hello_rust.rs", "cfg": ["CONFIG_RUST"]},
            {"proc_macro_dylib_path": "/home/me/.cache/crossboard/build/b/kernel/rust/libmacros.so", "edition": "2021"},
        ],
        # not the module's folder (another name that starts alike), so the work folder's
        "command": "clang -I/home/me/.cache/crossboard/build/b/kernel/include "
        "-o /home/me/.cache/crossboard/work/b/1234/modules/hello_rust_extra.o",
        "untouched": ["/crossboard/workshop", "/usr/include", 3],
    }


def test_a_module_joins_the_kernels_rust_project_as_the_samples_do_with_the_cfgs_of_its_own_build(tmp_path):
    from crossboard.pipeline.ide import with_module

    tree = "/crossboard/sources/linux"
    sample = {
        "display_name": "rust_minimal",
        "root_module": f"{tree}/samples/rust/rust_minimal.rs",
        "deps": [{"crate": 0, "name": "core"}, {"crate": 1, "name": "kernel"}],
        "cfg": ["CONFIG_RUST", 'CONFIG_RUST="y"'],
        "edition": "2021",
        "is_workspace_member": True,
    }
    kernel = {
        "display_name": "kernel",
        "root_module": f"{tree}/rust/kernel/lib.rs",
        "deps": [],
        "cfg": [],
        "is_workspace_member": True,
    }
    core = dict(kernel, display_name="core", root_module="/usr/lib/rustlib/src/rust/library/core/src/lib.rs")
    project = {"sysroot": "/usr", "crates": [core, kernel, sample]}
    (tmp_path / "Kbuild").write_text("obj-m := hello.o\n")
    (tmp_path / "hello.rs").write_text("")
    (tmp_path / "helper.rs").write_text("")  # not a crate root: no helper.o in Kbuild
    (tmp_path / ".hello.o.cmd").write_text(
        "cmd := rustc --cfg MODULE --cfg module_authors @rustc_cfg --cfg=CONFIG_RUST hello.rs\n"
    )

    added = with_module(project, tree, tmp_path, "/crossboard/work/modules/hello")
    assert added["sysroot"] == "/usr" and added["crates"][:3] == [
        dict(c, is_workspace_member=False) for c in (core, kernel, sample)
    ]
    assert added["crates"][3] == dict(
        sample,
        display_name="hello",
        root_module="/crossboard/work/modules/hello/hello.rs",
        cfg=["CONFIG_RUST", 'CONFIG_RUST="y"', "MODULE", "module_authors"],
    )
    assert len(added["crates"]) == 4 and project["crates"][2]["is_workspace_member"]  # the kernel's own is left as it was
