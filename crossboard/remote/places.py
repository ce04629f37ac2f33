"""Boards shared through labgrid: a board file names a place (`connection.labgrid`), and commands that
reach the board reserve it for as long as they work on it.

labgrid's own client library talks to the coordinator (gRPC since labgrid 25): crossboard acquires a
free place, uses one its user already holds as it is, and never takes one someone else holds. The SSH
address comes from the place's NetworkService; a power switch in the place becomes the board's power
cycle (`labgrid-client ... power cycle`, run while crossboard holds the place). What crossboard acquired
it releases, also when the work failed or was interrupted.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..board.load import LoadedBoard
from ..errors import InfrastructureError, UserError
from .console import console_url

DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's own default


def coordinator_of(board: LoadedBoard) -> str:
    lab = board.spec.connection.labgrid
    assert lab is not None
    return lab.coordinator or os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


@contextmanager
def reserved(boards: list[LoadedBoard], echo: bool = True) -> Iterator[list[LoadedBoard]]:
    """The boards, those in labgrid places reserved and given their SSH address; the places acquired
    here are released at the end, whatever happened in between."""
    if not any(board.spec.connection.labgrid for board in boards):
        yield boards
        return
    sessions: dict[str, Any] = {}
    held: list[tuple[Any, str, LoadedBoard]] = []
    try:
        ready = []
        for board in boards:
            if board.spec.connection.labgrid is None:
                ready.append(board)
                continue
            coordinator = coordinator_of(board)
            if coordinator not in sessions:
                sessions[coordinator] = _session(coordinator, board)
            session = sessions[coordinator]
            place = _check_place(session, board, coordinator)
            acquired_here = not place.acquired
            if acquired_here:
                held.append((session, coordinator, board))  # before the request: a failure or Ctrl-C inside it releases it too
                place = _acquire(session, board)
            if echo:
                how = "acquired" if acquired_here else "already yours"
                print(f"{board.name}: labgrid place {place.name} {how}", flush=True)
            ready.append(_reached_through(board, session, place, coordinator))
        yield ready
    finally:
        problems = [problem for session, coordinator, board in held if (problem := _release(session, coordinator, board))]
        for session in sessions.values():
            _stop(session)
        if problems:
            raise InfrastructureError("; ".join(problems))


def _session(coordinator: str, board: LoadedBoard):
    from labgrid.remote.client import start_session

    logging.disable(logging.CRITICAL)  # labgrid logs a coordinator it cannot reach; the error below says it once
    try:
        return start_session(coordinator)
    except Exception as error:  # labgrid raises its own errors and grpc's for a coordinator that is not there
        raise InfrastructureError(
            f"{board.file.name}: connection.labgrid: the labgrid coordinator at {coordinator} does not answer ({error})"
        ) from None
    finally:
        logging.disable(logging.NOTSET)


def _check_place(session, board: LoadedBoard, coordinator: str):
    """The board's place as the coordinator has it: free, or already this user's; else one line."""
    lab = board.spec.connection.labgrid
    assert lab is not None
    where = f"{board.file.name}: connection.labgrid.place {lab.place}"
    place = session.places.get(lab.place)
    if place is None:
        known = ", ".join(sorted(session.places)) or "none"
        raise UserError(f"{where}: no such place at the coordinator {coordinator} (places: {known})")
    me = _me(session)
    if place.acquired and place.acquired != me and me not in place.allowed:
        raise UserError(f"{where} is acquired by {place.acquired}: crossboard does not take a place someone else holds")
    return place


def _acquire(session, board: LoadedBoard):
    from labgrid.remote.generated import labgrid_coordinator_pb2

    lab = board.spec.connection.labgrid
    assert lab is not None
    where = f"{board.file.name}: connection.labgrid.place {lab.place}"
    _call(session, "AcquirePlace", labgrid_coordinator_pb2.AcquirePlaceRequest(placename=lab.place), where)
    return session.places[lab.place]


def _me(session) -> str:
    return f"{session.gethostname()}/{session.getuser()}"


def _reached_through(board: LoadedBoard, session, place, coordinator: str) -> LoadedBoard:
    """The board with the address, port and user of the place's NetworkService; with the place's power
    switch as its power cycle and its serial port as its console, unless the board file has them."""
    resources: dict[str, list[dict]] = {}
    for exporter, group, cls, name in place.acquired_resources:
        resource = session.resources.get(exporter, {}).get(group, {}).get(name)
        if resource is not None:
            resources.setdefault(cls, []).append(resource.params)
    services = resources.get("NetworkService", [])
    if len(services) != 1:
        where = f"{board.file.name}: connection.labgrid.place {place.name}"
        raise UserError(f"{where}: the place has {len(services)} NetworkService resources; crossboard needs exactly one")
    service = services[0]
    connection = board.spec.connection.model_copy(
        update={
            "host": service["address"],
            "port": board.spec.connection.port or service.get("port") or 22,
            "user": board.spec.connection.user or service.get("username") or None,
        }
    )
    client = shlex.join([_labgrid_client(), "-x", coordinator, "-p", place.name])
    deploy = board.spec.deploy
    if deploy.power_cycle is None and any(cls in POWER_RESOURCES for cls in resources):
        deploy = deploy.model_copy(update={"power_cycle": f"{client} power cycle"})
    serial = resources.get("NetworkSerialPort", [])
    if serial and console_url(board) is None:  # ser2net's telnet mode unless the exporter says raw
        scheme = "socket" if serial[0].get("protocol") == "raw" else "rfc2217"
        deploy = deploy.model_copy(update={"console": f"{scheme}://{serial[0]['host']}:{serial[0]['port']}"})
    return replace(board, spec=board.spec.model_copy(update={"connection": connection, "deploy": deploy}))


# labgrid resources a place's power switch may be (labgrid's resource classes that `power` drives)
POWER_RESOURCES = frozenset(
    {"NetworkPowerPort", "PDUDaemonPort", "USBPowerPort", "SiSPMPowerPort", "YKUSHPowerPort", "ModbusTCPCoil"}
)


def _labgrid_client() -> str:
    """labgrid-client of the labgrid crossboard runs with (installed beside this Python)."""
    beside = Path(sys.executable).with_name("labgrid-client")
    return str(beside) if beside.is_file() else "labgrid-client"


def _release(session, coordinator: str, board: LoadedBoard) -> str | None:
    """Release a place acquired here, or whose acquiring was under way; a no-op where the coordinator
    says it is not ours (the acquiring never happened). What went wrong, or None."""
    from labgrid.remote.generated import labgrid_coordinator_pb2

    lab = board.spec.connection.labgrid
    assert lab is not None
    try:
        _call(session, None, None, lab.place)  # the coordinator's view as it is now
        place = session.places.get(lab.place)
        if place is None or place.acquired != _me(session):
            return None
        _call(session, "ReleasePlace", labgrid_coordinator_pb2.ReleasePlaceRequest(placename=lab.place), lab.place)
    except (InfrastructureError, UserError) as error:
        return (
            f"{board.name}: labgrid place {lab.place} could not be released at {coordinator} ({error}): "
            f"it may still be yours; labgrid-client -p {lab.place} release"
        )
    return None


COORDINATOR_TIMEOUT = 15  # seconds a coordinator may take to answer one request


def _call(session, method: str | None, request, where: str) -> None:
    """One coordinator request (none: only the sync), then the session's view brought up to date with it."""
    import asyncio

    import grpc

    async def call_and_sync() -> None:
        if method is not None:
            await getattr(session.stub, method)(request)
        await session.sync_with_coordinator()

    try:
        session.loop.run_until_complete(asyncio.wait_for(call_and_sync(), COORDINATOR_TIMEOUT))
    except grpc.aio.AioRpcError as error:
        raise InfrastructureError(f"{where}: the labgrid coordinator says: {error.details()}") from None
    except TimeoutError:
        raise InfrastructureError(f"{where}: the labgrid coordinator did not answer in {COORDINATOR_TIMEOUT} s") from None


def _stop(session) -> None:
    try:
        session.loop.run_until_complete(session.stop())
        session.loop.run_until_complete(session.close())
    except Exception:  # a coordinator gone away leaves nothing to close cleanly; nothing more to do
        pass
