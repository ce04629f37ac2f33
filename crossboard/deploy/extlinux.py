"""Reading and changing a board's extlinux.conf (U-Boot distro boot): our kernel becomes a new
default label that copies the stock default's kernel command line; the stock labels stay."""

from __future__ import annotations

from dataclasses import dataclass

KERNEL_KEYWORDS = ("kernel", "linux")


@dataclass(frozen=True)
class Label:
    name: str
    start: int  # index of the `label` line
    end: int  # index after its last line

    def lines(self, lines: list[str]) -> list[str]:
        return lines[self.start : self.end]


def _keyword(line: str) -> tuple[str, str]:
    words = line.strip().split(None, 1)
    return (words[0].lower(), words[1].strip() if len(words) > 1 else "") if words else ("", "")


def parse(text: str) -> tuple[list[str], str | None, dict[str, Label]]:
    """(lines, the default label's name, labels by name)."""
    lines = text.splitlines()
    default, labels, current = None, {}, None
    for index, line in enumerate(lines):
        keyword, value = _keyword(line)
        if keyword == "default":
            default = value
        if keyword == "label":
            if current:
                labels[current[0]] = Label(current[0], current[1], index)
            current = (value, index)
    if current:
        labels[current[0]] = Label(current[0], current[1], len(lines))
    return lines, default, labels


def check(text: str) -> None:
    """Refuse a file U-Boot could not boot from as we would leave it; ValueError says why."""
    lines, default, labels = parse(text)
    if not labels:
        raise ValueError("no `label` entries")
    if default is None:
        raise ValueError("no `default` line")
    if default not in labels:
        raise ValueError(f"`default {default}` names no label (labels: {', '.join(labels)})")
    for label in labels.values():
        if not any(_keyword(line)[0] in KERNEL_KEYWORDS for line in label.lines(lines)):
            raise ValueError(f"label {label.name!r} has no kernel line")


def _value(label: Label, lines: list[str], keyword: str) -> str | None:
    return next((value for key, value in map(_keyword, label.lines(lines)) if key == keyword), None)


def add_default_label(text: str, name: str, kernel: str, fdt: str | None, initrd: str | None = None) -> tuple[str, str]:
    """The file with a new default label `name` booting `kernel` (and `fdt`, and `initrd`) with the stock
    default's append line; returns (new text, the stock default's name). A label of that name is replaced."""
    check(text)
    lines, default, labels = parse(text)
    assert default is not None  # check() refuses a file without one
    stock = labels[default]
    block = [f"label {name}", f"    menu label {name}", f"    linux {kernel}"]
    if initrd:
        block.append(f"    initrd {initrd}")
    if fdt:
        block.append(f"    fdt {fdt}")
    elif (fdtdir := _value(stock, lines, "fdtdir")) is not None:
        block.append(f"    fdtdir {fdtdir}")
    if (append := _value(stock, lines, "append")) is not None:
        block.append(f"    append {append}")
    if name in labels:
        old = labels[name]
        lines = lines[: old.start] + lines[old.end :]
        _, _, labels = parse("\n".join(lines))
    if not labels:
        raise ValueError(
            f"its one label is crossboard's own {name}, so no stock kernel would be left to fall back to: "
            "put the board's menu back (invoke rollback, or an extlinux.conf.crossboard-<time> backup beside it)"
        )
    first = min(label.start for label in labels.values())
    lines = lines[:first] + block + [""] + lines[first:]
    return _set_default("\n".join(lines) + "\n", name), default


def default_kernel(text: str) -> str:
    """The kernel path of the default label of a file check() accepts."""
    check(text)
    lines, default, labels = parse(text)
    assert default is not None
    return next(value for key, value in map(_keyword, labels[default].lines(lines)) if key in KERNEL_KEYWORDS)


def append_of(text: str, name: str) -> str:
    """Label `name`'s kernel command line ("" when it has none)."""
    lines, _, labels = parse(text)
    return _value(labels[name], lines, "append") or ""


def remove_label(text: str, name: str, default: str) -> str:
    """The file without label `name`, with `default` the default again."""
    lines, _, labels = parse(text)
    if name in labels:
        label = labels[name]
        end = label.end + 1 if label.end < len(lines) and not lines[label.end].strip() else label.end
        lines = lines[: label.start] + lines[end:]
    result = _set_default("\n".join(lines) + "\n", default)
    check(result)
    return result


def _set_default(text: str, name: str) -> str:
    lines = [f"default {name}" if _keyword(line)[0] == "default" else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"
