"""A labgrid place acquired by crossboard is never left acquired: a fake coordinator session (pure
logic: labgrid's own client against a real coordinator is tests/test_labgrid.py)."""

import asyncio
from types import SimpleNamespace

import pytest
from fakes import copy_project

from crossboard.board.load import load_board
from crossboard.errors import InfrastructureError
from crossboard.remote import places

pytestmark = pytest.mark.fast
ME = "bench/me"


class Interrupted(BaseException):
    """Ctrl-C inside a request, as far as crossboard's code is concerned (not an Exception)."""


class FakeSession:
    """What crossboard uses of labgrid's ClientSession: places, their holder, two requests and a sync."""

    def __init__(self, acquire_fails_after_taking: bool = False, sync_fails: int = 0, interrupt_acquire: bool = False):
        self.loop = asyncio.new_event_loop()
        self.coordinator = {"p1": ""}  # place -> holder, as the coordinator has it
        self.places = {}
        self.acquire_fails_after_taking, self.sync_fails, self.interrupt_acquire = (
            acquire_fails_after_taking,
            sync_fails,
            interrupt_acquire,
        )
        self.stub = SimpleNamespace(AcquirePlace=self._acquire, ReleasePlace=self._release)
        self.loop.run_until_complete(self.sync_with_coordinator())

    def gethostname(self):
        return "bench"

    def getuser(self):
        return "me"

    async def _acquire(self, request):
        self.coordinator[request.placename] = ME
        if self.interrupt_acquire:
            raise Interrupted  # Ctrl-C while the request was under way, after the coordinator took it
        if self.acquire_fails_after_taking:
            self.sync_fails = 1  # the coordinator took it, then the sync that follows fails

    async def _release(self, request):
        self.coordinator[request.placename] = ""

    async def sync_with_coordinator(self):
        if self.sync_fails:
            self.sync_fails -= 1
            raise TimeoutError
        self.places = {
            name: SimpleNamespace(name=name, acquired=holder, allowed=[], acquired_resources=[])
            for name, holder in self.coordinator.items()
        }

    async def stop(self):
        pass

    async def close(self):
        pass


@pytest.fixture
def lab_board(tmp_path):
    boards = copy_project(tmp_path)
    text = (boards / "qemu-arm64.yaml").read_text()
    by_address = next(line for line in text.splitlines(keepends=True) if line.startswith("  host:"))
    (boards / "qemu-arm64.yaml").write_text(text.replace(by_address, "  labgrid: {place: p1, coordinator: '127.0.0.1:1'}\n"))
    return load_board("qemu-arm64", boards)


def reserve_with(monkeypatch, session, board):
    monkeypatch.setattr(places, "_session", lambda coordinator, board: session)
    with places.reserved([board], echo=False):
        pass


def test_a_place_acquired_whose_sync_then_fails_is_released(monkeypatch, lab_board):
    session = FakeSession(acquire_fails_after_taking=True)
    with pytest.raises(InfrastructureError, match="did not answer"):
        reserve_with(monkeypatch, session, lab_board)
    assert session.coordinator == {"p1": ""}


def test_ctrl_c_inside_the_acquire_request_still_releases_the_place(monkeypatch, lab_board):
    session = FakeSession(interrupt_acquire=True)
    with pytest.raises(Interrupted):
        reserve_with(monkeypatch, session, lab_board)
    assert session.coordinator == {"p1": ""}


def test_a_place_that_cannot_be_released_is_named_with_how_to_release_it(monkeypatch, lab_board):
    session = FakeSession(acquire_fails_after_taking=True)
    session.sync_fails = 0

    async def unreachable():
        raise TimeoutError

    def break_the_coordinator_after_acquiring(request):
        session.coordinator["p1"] = ME
        session.sync_with_coordinator = unreachable  # every later request goes unanswered
        raise TimeoutError

    session.stub.AcquirePlace = lambda request: asyncio.sleep(0, result=break_the_coordinator_after_acquiring(request))
    with pytest.raises(InfrastructureError, match=r"labgrid place p1 could not be released .* labgrid-client -p p1 release"):
        reserve_with(monkeypatch, session, lab_board)


def test_a_place_crossboard_did_not_get_is_not_released_behind_its_holders_back(monkeypatch, lab_board):
    session = FakeSession()

    async def taken_by_someone_else(request):
        session.coordinator["p1"] = "other/alice"
        raise TimeoutError

    session.stub.AcquirePlace = taken_by_someone_else
    with pytest.raises(InfrastructureError, match="did not answer"):
        reserve_with(monkeypatch, session, lab_board)
    assert session.coordinator == {"p1": "other/alice"}
