"""A board's console read while it reboots (remote/console.py), from a TCP console on 127.0.0.1."""

import socket
import threading
import time

import pytest

from crossboard.board.load import load_board
from crossboard.remote.console import console_hint, reading_console

pytestmark = pytest.mark.fast


def board_with_console(console: str):
    return load_board("qemu-arm64", overrides={"deploy": {"console": console}})


def console_server(lines: list[bytes]) -> tuple[int, threading.Thread]:
    """A raw TCP console that prints `lines`, a little apart, to whoever connects first."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        with listener:
            listener.settimeout(10)
            connection, _ = listener.accept()
            with connection:
                time.sleep(0.3)  # pyserial empties what is there when it opens: the board speaks after, as a reboot does
                for line in lines:
                    connection.sendall(line)
                    time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_what_the_console_printed_is_logged_and_its_last_lines_are_the_hint(tmp_path):
    lines = [b"U-Boot 2025.01\r\n", b"Starting kernel ...\r\n", b"\r\n"] + [f"line {n}\r\n".encode() for n in range(8)]
    lines.append(b"Kernel panic - not syncing: No working init found\r\n")
    port, server = console_server(lines)
    board = board_with_console(f"socket://127.0.0.1:{port}")
    log = tmp_path / "out/logs/console-reboot.log"
    with reading_console(board, log) as console:
        server.join(timeout=10)
        time.sleep(0.5)  # the reader takes what is left
    assert console is not None
    assert log.read_bytes() == b"".join(lines)
    assert console.tail().startswith("line 3 | line 4") and console.tail().endswith(
        "line 7 | Kernel panic - not syncing: No working init found"
    )
    # what it said about the failure, even when the board's next boot printed more since
    assert (
        console_hint(board, console) == f"its console said: Kernel panic - not syncing: No working init found (all of it: {log})"
    )


def test_a_console_in_words_is_named_and_one_that_cannot_be_opened_is_said_once(tmp_path, capsys):
    words = board_with_console("the debug UART header")
    with reading_console(words, tmp_path / "log") as console:
        assert console is None
    assert console_hint(words, None) == "see the debug UART header"
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    gone = board_with_console(f"socket://127.0.0.1:{port}")
    with reading_console(gone, tmp_path / "log") as console:
        assert console is None
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"crossboard: qemu-arm64: not reading its console socket://127.0.0.1:{port}")
