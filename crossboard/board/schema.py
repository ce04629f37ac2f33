"""What a board file may say. Every key is documented in boards/README.md."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..toolchain.profiles import DEFAULT_PROFILE, PROFILE_NAME

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
NonEmpty = Annotated[str, Field(min_length=1)]
# a path that goes into a U-Boot script or extlinux.conf: U-Boot splits its arguments at spaces, and a `;`
# would start a command of its own
BootPath = Annotated[str, Field(pattern=r"^[A-Za-z0-9._/+-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def exactly_one(model, first, second, message: str):
    """For a validator: `model` when exactly one of the two keys is given, else the message."""
    if (first is None) == (second is None):
        raise ValueError(message)
    return model


class Tarball(Strict):
    url: NonEmpty
    sha256: Sha256


class Git(Strict):
    url: Annotated[str, Field(pattern=r"^[^-\s]\S*$")]  # never an option to git
    ref: Annotated[str, Field(pattern=r"^[^-\s]\S*$")]


SOURCE_KINDS = ("debian", "tarball", "git", "path", "devel")


class KernelSource(Strict):
    """Exactly one of: a Debian linux-source package, a tarball, a git ref, a local folder, or a devel
    bundle (a kernel another build made: only modules and apps are built against it)."""

    debian: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]*$")] | None = None  # a Debian package name
    tarball: Tarball | None = None
    git: Git | None = None
    path: NonEmpty | None = None
    devel: NonEmpty | None = None  # a kernel-devel-<release>.tar.gz that `invoke build` wrote

    @model_validator(mode="after")
    def exactly_one(self):
        given = [name for name in SOURCE_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SOURCE_KINDS)} (got {', '.join(given) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in SOURCE_KINDS if getattr(self, name) is not None)


class KernelConfig(Strict):
    # a make target (defconfig, allnoconfig, ...) or `file:NAME`, a full config under boards/
    base: Annotated[str, Field(pattern=r"^(?:[a-z0-9_.-]*config|file:\S+)$")]
    fragments: list[NonEmpty] = []


class Kernel(Strict):
    source: KernelSource
    config: KernelConfig | None = None  # required unless the source is a devel bundle (already configured)
    localversion: Annotated[str, Field(pattern=r"^[A-Za-z0-9._+-]*$")] = ""
    image: Literal["Image", "Image.gz"] = "Image"
    # each segment starts with a letter, digit or _: never `..`, never an option to make
    dtbs: list[Annotated[str, Field(pattern=r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)*[A-Za-z0-9_][A-Za-z0-9_.-]*\.dtb$")]] = []
    samples: list[Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]] = []
    boot: Literal["built-in-drivers", "initramfs"] = "built-in-drivers"

    @model_validator(mode="after")
    def config_unless_built(self):
        if self.config is None and self.source.devel is None:
            raise ValueError("config is required (a devel bundle source is the one kind that needs none)")
        return self


class Targets(Strict):
    rust: NonEmpty = "aarch64-unknown-linux-gnu"
    clang: NonEmpty = "aarch64-linux-gnu"
    glibc: Annotated[str, Field(pattern=r"^\d+\.\d+$")]


BinName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")]  # a cargo binary target's name


class Ready(Strict):
    """When a service counts as up: exactly one of a TCP port it listens on, or a line it prints."""

    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    line: NonEmpty | None = None

    @model_validator(mode="after")
    def port_or_line(self):
        return exactly_one(self, self.port, self.line, "give exactly one of port and line")


class Service(Strict):
    """An app that runs in the background while the deploy runs the other apps, then is stopped."""

    ready: Ready
    keep_running: bool = False  # left running after the deploy; the next deploy stops it first


class App(Strict):
    path: NonEmpty  # the package's folder, or a workspace's with `package:`
    package: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")] | None = None
    bins: list[BinName] = []  # the binaries to deploy; none named: every binary cargo made
    run: BinName | None = None  # the one deploy runs; default: the package's default-run, or its only binary
    features: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_/+.-]+$")]] = []
    default_features: bool = True
    static: bool = False
    args: list[str] = []
    timeout: Annotated[int, Field(gt=0)] = 30  # a service: how long it has to get ready
    expect_stdout: list[str] = []
    service: Service | None = None


class LabgridPlace(Strict):
    """A board shared through labgrid: the place to reserve, and the coordinator (else LG_COORDINATOR,
    else labgrid's default 127.0.0.1:20408)."""

    place: NonEmpty
    coordinator: NonEmpty | None = None


class Connection(Strict):
    # Exactly one of: the board's address, or the labgrid place whose NetworkService gives it (and its
    # port and user, unless set here).
    host: NonEmpty | None = None
    labgrid: LabgridPlace | None = None
    # Unset port and user come from ~/.ssh/config, else 22 and root.
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    user: NonEmpty | None = None
    key: NonEmpty | None = None
    host_key_policy: Literal["strict", "trust-new"] = "strict"
    sudo: bool = False
    connect_timeout: Annotated[int, Field(gt=0)] = 10

    @model_validator(mode="after")
    def host_or_place(self):
        return exactly_one(self, self.host, self.labgrid, "give exactly one of host and labgrid (a place that names the host)")


class Boot(Strict):
    partition: BootPath
    extlinux: BootPath = "extlinux/extlinux.conf"
    # deploy --kernel --reboot boots the new kernel once through a boot.scr before making it the default
    # (deploy/try_once.py): needs a FAT boot partition and a U-Boot with standard boot, fatwrite and fatrm
    try_once: bool = True


class ModuleExpect(Strict):
    load: list[str] = []
    unload: list[str] = []


class Deploy(Strict):
    remote_dir: NonEmpty
    boot: Boot | None = None
    # where to look when a board does not come back from a reboot (deploy --kernel --reboot)
    console: NonEmpty = "the board's serial console"
    reboot_timeout: Annotated[int, Field(gt=0)] = 180
    # A host command that power-cycles the board (a PDU, a relay, labgrid): a kernel that hangs on a
    # try-once install is then left without a human; run in the project folder.
    power_cycle: NonEmpty | None = None
    keep_loaded: bool = False
    expect: dict[Annotated[str, Field(pattern=r"^[a-z0-9_]+$")], ModuleExpect] = {}


class Virtual(Strict):
    """A board QEMU emulates: `invoke qemu.up` boots it."""

    machine: NonEmpty = "virt"
    cpu: NonEmpty = "cortex-a53"
    cpus: Annotated[int, Field(ge=1, le=8)] = 2
    memory_mb: Annotated[int, Field(ge=128)] = 512
    boot_timeout: Annotated[int, Field(gt=0)] = 120
    # `kernel`: QEMU loads this board's kernel and an initramfs root directly. `u-boot`: QEMU runs
    # U-Boot from a disk with a FAT boot partition (extlinux.conf) and an ext4 root, like a BeaglePlay,
    # whose stock kernel is the build of the board named by `stock_kernel`.
    boot: Literal["kernel", "u-boot"] = "kernel"
    stock_kernel: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] | None = None

    @model_validator(mode="after")
    def stock_kernel_with_u_boot(self):
        if (self.boot == "u-boot") != (self.stock_kernel is not None):
            raise ValueError("stock_kernel is given exactly when boot is u-boot")
        return self


class BoardSpec(Strict):
    description: NonEmpty
    arch: Literal["arm64"]
    # the toolchain profile that builds this board (containers/toolchain/profiles/<name>/)
    toolchain: Annotated[str, Field(pattern=PROFILE_NAME.pattern)] = DEFAULT_PROFILE
    targets: Targets
    kernel: Kernel
    modules: list[NonEmpty] = []
    apps: list[App] = []
    connection: Connection
    deploy: Deploy
    virtual: Virtual | None = None


BOARD_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class Group(Strict):
    """boards/<name>.group.yaml: several boards under one name, for `invoke deploy --board <name>`."""

    description: NonEmpty
    boards: Annotated[list[Annotated[str, Field(pattern=BOARD_NAME.pattern)]], Field(min_length=1)]
