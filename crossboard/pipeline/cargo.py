"""What cargo says it made: the binaries an app's build produced, read from cargo's own JSON messages
(`--message-format=json-render-diagnostics`), never guessed from the package's name."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path, PurePosixPath

from ..board.schema import App
from ..errors import UserError
from ..toolchain.stream import Tee

MESSAGE_FORMAT = "--message-format=json-render-diagnostics"  # messages on stdout, diagnostics as cargo prints them


class CargoMessages(Tee):
    """A tee in front of a step's own: cargo's JSON message lines are kept here, everything else goes
    on to the log and the terminal as it comes."""

    def __init__(self, inner: Tee):
        super().__init__(log_path=None, echo=False)
        self.inner, self.log_path = inner, inner.log_path
        self.messages: list[dict] = []
        self._partial = b""

    def write(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith(b'{"reason":'):
                self.messages.append(json.loads(line))
            else:
                self.inner.write(line + b"\n")

    def line(self, text: str) -> None:
        self.inner.line(text)

    def executables(self) -> list[str]:
        """The file names of the binaries the build made (bin targets), in cargo's order."""
        made = [
            PurePosixPath(message["executable"]).name
            for message in self.messages
            if message.get("reason") == "compiler-artifact" and message.get("executable") and "bin" in message["target"]["kind"]
        ]
        return list(dict.fromkeys(made))


def build_flags(app: App, has_lock: bool) -> list[str]:
    """What the board file says of the app, as cargo's flags."""
    flags = [MESSAGE_FORMAT]
    flags += ["--package", app.package] if app.package else []
    flags += ["--features", ",".join(app.features)] if app.features else []
    flags += ["--no-default-features"] if not app.default_features else []
    flags += ["--locked"] if has_lock else []  # the app's Cargo.lock, honoured as cargo install --locked does
    return flags


def fetch_argv(build: list[str]) -> list[str]:
    """`cargo fetch` of what `build` (a `cargo build` argv) needs: the same manifest, target and lock."""
    keep = {"--manifest-path", "--target"}
    fetch = ["cargo", "fetch"]
    for index, arg in enumerate(build):
        if arg in keep:
            fetch += [arg, build[index + 1]]
    return fetch + (["--locked"] if "--locked" in build else [])


def remove_configuration(cargo_home: Path) -> None:
    """A cargo home's own configuration files (config.toml can name a rustc wrapper, credentials a
    provider to run), which crossboard's cargo homes never have but a build's code could write."""
    for name in ("config", "config.toml", "credentials", "credentials.toml"):
        (cargo_home / name).unlink(missing_ok=True)


def chosen_binaries(app: App, index: int, made: list[str], default_run: str | None) -> tuple[list[str], str]:
    """(the binaries to deploy, the one deploy runs): those the board file names (`bins:`, `run:`), else
    every binary cargo made and its package's default-run, or its one binary. One line naming the app and
    what cargo made when they do not fit."""
    where = f"apps[{index}] {app.path}" + (f" (package {app.package})" if app.package else "")
    if not made:
        raise UserError(f"{where}: cargo made no binary (no [[bin]] target in the package)")
    missing = [name for name in [*app.bins, *([app.run] if app.run else [])] if name not in made]
    if missing:
        raise UserError(f"{where}: cargo made no binary {', '.join(missing)}; it made {', '.join(made)}")
    binaries = app.bins or made
    run = app.run or (default_run if default_run in binaries else None) or (binaries[0] if len(binaries) == 1 else None)
    if run is None:
        raise UserError(f"{where} makes several binaries ({', '.join(binaries)}): say which one deploy runs with `run:`")
    return binaries, run


def package_of(app: App, index: int, app_dir: Path) -> dict:
    """The [package] table of the app's package: its folder's, or with `package:` the workspace member's
    of that name; one line naming the packages there are when there is none."""
    where = f"apps[{index}] {app.path}"
    manifests = [app_dir / "Cargo.toml"]
    if app.package:
        manifests += sorted(path for path in app_dir.glob("*/**/Cargo.toml") if "target" not in path.relative_to(app_dir).parts)
    packages = {}
    for manifest in manifests:
        try:
            table = tomllib.loads(manifest.read_text()).get("package")
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise UserError(f"{where}: {manifest}: not a Cargo.toml cargo can read ({error})") from None
        if isinstance(table, dict) and isinstance(table.get("name"), str):
            packages[table["name"]] = {"default-run": None} | table
    wanted = app.package or next(iter(packages), None)
    if wanted not in packages:
        if app.package:
            raise UserError(f"{where}: no package {app.package} in the workspace (packages: {', '.join(packages) or 'none'})")
        raise UserError(f"{where}: no [package] in its Cargo.toml (a workspace: name the member with `package:`)")
    return packages[wanted]
