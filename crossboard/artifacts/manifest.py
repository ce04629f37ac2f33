"""out/<board>/manifest.json: written when a build starts and replaced atomically after each step,
so a killed build still says what it did and where it stopped."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import UserError
from .files import release_of_vermagic, sha256_of, vermagic_of, write_atomically

MANIFEST_NAME = "manifest.json"
# Raised when what the manifest records changes (2: apps say which board-file app they were built from;
# 3: the kernel's build ID; 4: the toolchain profile; 5: the devel bundle), so that a build collects again
# instead of keeping a manifest of the old form.
MANIFEST_FORMAT = 5
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# one part of an artifact's path: plain names only, so no path a manifest names leaves out/<board>/
PLAIN_PART = re.compile(r"^[A-Za-z0-9_+@-][A-Za-z0-9._+@-]*$")
# What build steps write into the manifest (a skipped step gives the same values again).
STEP_FIELDS = (
    "tools",
    "config_sha256",
    "kernel_release",
    "kernel_build_id",
    "pulled_build_id",
    "app_builder",
    "app_glibc",
    "app_binaries",
    "devel_bundle",
    "artifacts",
)


@dataclass(frozen=True)
class Artifact:
    """One file of a build, as the manifest records it: what deploy, kernel installs and the virtual
    boards know of it without looking anywhere else."""

    path: str  # relative to the output folder
    kind: str  # kernel, dtb, config, module, app, modules-tree, devel
    size: int
    sha256: str
    source: str | None = None  # an app's path in the board file
    vermagic: str | None = None  # modules
    release: str | None = None  # modules: the kernel release of their vermagic

    @property
    def file_name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def module_name(self) -> str:
        return PurePosixPath(self.path).stem

    def record(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class StepRecord:
    name: str
    status: str = "pending"  # pending, running, done, skipped, failed
    seconds: float = 0.0
    log: str = ""
    note: str = ""


@dataclass
class Manifest:
    board: str
    out_dir: Path
    status: str = "running"
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    finished: str = ""
    error: str = ""
    runtime: str = ""
    toolchain: str = ""  # the toolchain profile (containers/toolchain/profiles/<name>/)
    image: dict = field(default_factory=dict)
    tools: dict = field(default_factory=dict)
    board_file_sha256: str = ""
    config_sha256: str = ""
    kernel_release: str = ""
    # vmlinux's GNU build ID: what a board shows in /sys/kernel/notes when it runs this very kernel build
    kernel_build_id: str = ""
    # the build ID of the board's kernel whose config this build started from (invoke config.pull)
    pulled_build_id: str = ""
    app_builder: str = ""
    app_glibc: dict = field(default_factory=dict)  # app binary -> highest GLIBC_x.y it needs ("" for none)
    # an app's path in the board file -> {"binaries": what cargo made of it that is deployed, "run": the one deploy runs}
    app_binaries: dict = field(default_factory=dict)
    # the devel bundle the modules were built against (its path, sha256, board and profile); {} when this
    # build built its kernel
    devel_bundle: dict = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    artifacts: list[dict] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    def step(self, name: str) -> StepRecord:
        return next(record for record in self.steps if record.name == name)

    def add_artifact(self, path: Path, kind: str, source: str | None = None) -> None:
        """Record a file under out_dir with its size and sha256 (and vermagic for modules); `source`:
        what in the board file it was built from (an app's path), so that deploy needs nothing else."""
        vermagic = vermagic_of(path) if path.suffix == ".ko" else None
        entry = Artifact(
            path=str(path.relative_to(self.out_dir)),
            kind=kind,
            size=path.stat().st_size,
            sha256=sha256_of(path),
            source=source,
            vermagic=vermagic,
            release=release_of_vermagic(vermagic) if vermagic is not None else None,
        ).record()
        self.artifacts = [a for a in self.artifacts if a["path"] != entry["path"]] + [entry]

    def finish(self, status: str, error: str = "") -> None:
        self.status, self.error = status, error
        self.finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.save()

    def save(self) -> None:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        write_atomically(self.path, (json.dumps(data, indent=2) + "\n").encode())


def earlier_manifest(out_dir: Path, board: str) -> Manifest | None:
    """The manifest a previous build of `board` left in out_dir, or None."""
    try:
        data = load_manifest(out_dir)
    except (FileNotFoundError, ValueError):
        return None
    if manifest_problem(data) or data.get("board") != board:  # not one crossboard wrote: as if there were none
        return None
    data["out_dir"] = out_dir
    fields = StepRecord.__dataclass_fields__
    data["steps"] = [StepRecord(**{k: v for k, v in record.items() if k in fields}) for record in data.get("steps", [])]
    known = Manifest.__dataclass_fields__
    return Manifest(**{key: value for key, value in data.items() if key in known})


def load_manifest(out_dir: Path) -> dict:
    return json.loads((out_dir / MANIFEST_NAME).read_text())


@dataclass(frozen=True)
class FinishedBuild:
    """A finished build of a board, read from its manifest: the one contract between the build and
    deploy, kernel installs and the virtual boards."""

    board: str
    out_dir: Path
    kernel_release: str
    artifacts: tuple[Artifact, ...]
    app_glibc: dict[str, str]  # app binary -> the highest GLIBC_x.y it needs ("" for none)
    kernel_build_id: str = ""
    app_run: dict[str, str] = field(default_factory=dict)  # an app's path -> the binary deploy runs
    pulled_build_id: str = ""

    @property
    def kernel_builds(self) -> tuple[str, ...]:
        """The kernel builds this build's modules are for: its own, and the board's it was pulled from."""
        return tuple(build_id for build_id in (self.kernel_build_id, self.pulled_build_id) if build_id)

    def of_kind(self, kind: str) -> list[Artifact]:
        return [artifact for artifact in self.artifacts if artifact.kind == kind]

    def one(self, kind: str) -> Artifact | None:
        return next(iter(self.of_kind(kind)), None)

    def local(self, artifact: Artifact) -> Path:
        return self.out_dir / artifact.path


def finished_build(out_dir: Path, board: str) -> FinishedBuild:
    """The finished build of `board` in out_dir, checked as the contract it is: one line naming the
    file when it is missing, unfinished or damaged. Finished means every step done or skipped, whatever
    the status field says."""
    file = out_dir / MANIFEST_NAME
    rebuild = f"run invoke build --board {board}"
    try:
        manifest = load_manifest(out_dir)
    except FileNotFoundError:
        raise UserError(f"{file}: no build for {board}: {rebuild}") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{file}: not readable as JSON ({error}): {rebuild}") from None
    problem = manifest_problem(manifest)
    if problem:
        raise UserError(f"{file}: not a manifest crossboard wrote ({problem}): {rebuild}")
    unfinished = [step["name"] for step in manifest.get("steps", []) if step.get("status") not in ("done", "skipped")]
    if manifest["status"] != "done" or unfinished:
        state = manifest["status"] if manifest["status"] != "done" else f"step {', '.join(unfinished)} not done"
        raise UserError(f"{file}: the last build of {board} did not finish ({state}): {rebuild}")
    fields = Artifact.__dataclass_fields__
    glibc, made = manifest.get("app_glibc"), manifest.get("app_binaries")
    runs = (
        {str(path): str(app.get("run")) for path, app in made.items() if isinstance(app, dict)} if isinstance(made, dict) else {}
    )
    return FinishedBuild(
        board=board,
        out_dir=out_dir,
        kernel_release=manifest["kernel_release"],
        artifacts=tuple(Artifact(**{k: v for k, v in a.items() if k in fields}) for a in manifest["artifacts"]),
        app_glibc={str(k): str(v) for k, v in glibc.items()} if isinstance(glibc, dict) else {},
        kernel_build_id=str(manifest.get("kernel_build_id") or ""),
        pulled_build_id=str(manifest.get("pulled_build_id") or ""),
        app_run=runs,
    )


def manifest_problem(manifest: object) -> str | None:
    """What makes `manifest` (parsed JSON, from a file or an engine) not one crossboard wrote; None when it is."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    for key, kind in (("status", str), ("kernel_release", str), ("artifacts", list)):
        if not isinstance(manifest.get(key), kind):
            return f"{key} missing or not a {kind.__name__}"
    steps = manifest.get("steps", [])
    if not isinstance(steps, list) or not all(isinstance(step, dict) and isinstance(step.get("name"), str) for step in steps):
        return "steps is not a list of objects"
    for artifact in manifest["artifacts"]:
        if not isinstance(artifact, dict) or not all(isinstance(artifact.get(k), str) for k in ("path", "kind", "sha256")):
            return "an artifact without path, kind or sha256"
        path = PurePosixPath(artifact["path"])
        plain = not path.is_absolute() and all(PLAIN_PART.match(part) and part != ".." for part in path.parts)
        if not plain or not SHA256.match(artifact["sha256"]):
            return f"artifact {artifact['path']!r}: not a path inside the output folder with a sha256, of plain names"
        if not isinstance(artifact.get("size"), int) or not all(
            isinstance(artifact.get(k), str | None) for k in ("source", "vermagic", "release")
        ):
            return f"artifact {artifact['path']!r}: size, source, vermagic or release missing or of the wrong type"
    return None
