"""The stub watch reloads a model only when one of its stubs died, not when the model was unloaded, loaded again or
replaced by a new version (its stubs exit then too). Driven through a fake /proc: no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.serving.watch import SHM, StubWatch, stubs_of

SERVER = 4242


class FakeProc:
    """A /proc with tritonserver's stubs (and an unrelated process) that a test starts and kills."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ticks = 1000
        (root / "self").mkdir(parents=True)  # not a pid: skipped
        self.add(7, "/usr/bin/python3", "x.py", parent=1)

    def add(self, pid: int, exe: str, script: str, *, parent: int = SERVER, region: str = "region") -> None:
        self.ticks += 10
        d = self.root / str(pid)
        d.mkdir()
        args = [exe, script, region, "1048576", "1048576", str(parent), "/backends", "33"]
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
        fields = ["S", str(parent)] + ["0"] * 17 + [str(self.ticks)] + ["0"] * 5
        (d / "stat").write_text(f"{pid} (stub) " + " ".join(fields))

    def stub(self, pid: int, model: str, version: str = "1") -> None:
        self.add(pid, "/b/triton_python_backend_stub", f"/repo/{model}/{version}/model.py", region=f"finscore-t-{pid}")

    def kill(self, pid: int) -> None:
        for f in (self.root / str(pid)).iterdir():
            f.unlink()
        (self.root / str(pid)).rmdir()


class Watch(StubWatch):
    """The watch with Triton's repository index and its reloads replaced."""

    def __init__(self, proc: Path, ready: set[tuple[str, str]]) -> None:
        super().__init__(SERVER, "http://unused", proc=proc, note=self.notes_append)
        self.ready = ready
        self.asked: list[str] = []
        self.notes: list[str] = []

    def notes_append(self, line: str) -> None:
        self.notes.append(line)

    def _ready_versions(self) -> set[tuple[str, str]]:
        return self.ready

    def _reload(self, model: str) -> None:
        self.asked.append(model)

    @staticmethod
    def _audit(model: str, outcome: str, reason: str, **fields: object) -> None:
        pass


@pytest.fixture()
def proc(tmp_path: Path) -> FakeProc:
    fake = FakeProc(tmp_path / "proc")
    fake.stub(100, "churn")
    fake.stub(101, "threat")
    fake.stub(102, "threat")  # two instances
    return fake


def test_the_stubs_of_a_server_are_read_from_proc(proc: FakeProc) -> None:
    stubs = stubs_of(SERVER, proc.root)
    assert sorted((s.pid, s.model, s.version) for s in stubs) == [
        (100, "churn", "1"),
        (101, "threat", "1"),
        (102, "threat", "1"),
    ]
    assert stubs_of(SERVER + 1, proc.root) == []


def test_a_dead_stub_reloads_its_model_once(proc: FakeProc) -> None:
    watch = Watch(proc.root, {("churn", "1"), ("threat", "1")})
    watch._known = {s.pid: s for s in stubs_of(SERVER, proc.root)}
    proc.kill(102)  # one of threat's two instances
    assert watch.check() == ["threat"]
    assert watch.asked == ["threat"]
    assert any("(pid 102) died" in n for n in watch.notes)
    assert watch.check() == []  # seen once, handled once


def test_a_model_unloaded_on_purpose_is_left_alone(proc: FakeProc) -> None:
    watch = Watch(proc.root, {("threat", "1")})  # churn no longer READY
    watch._known = {s.pid: s for s in stubs_of(SERVER, proc.root)}
    proc.kill(100)
    assert watch.check() == []
    assert watch.asked == []


def test_a_model_loaded_again_is_left_alone(proc: FakeProc) -> None:
    """A same-version load: the new stub starts before the old one exits, and the version stays READY."""
    watch = Watch(proc.root, {("churn", "1"), ("threat", "1")})
    watch._known = {s.pid: s for s in stubs_of(SERVER, proc.root)}
    proc.stub(200, "churn")
    assert watch.check() == []
    proc.kill(100)
    assert watch.check() == []
    assert watch.asked == []


def test_a_new_version_is_left_alone(proc: FakeProc) -> None:
    watch = Watch(proc.root, {("churn", "2"), ("threat", "1")})
    watch._known = {s.pid: s for s in stubs_of(SERVER, proc.root)}
    proc.stub(200, "churn", "2")
    proc.kill(100)
    assert watch.check() == []


def test_a_dead_stubs_shared_memory_is_reclaimed(proc: FakeProc) -> None:
    region = SHM / "finscore-t-100"
    if not SHM.is_dir():
        pytest.skip("no /dev/shm on this system")
    region.write_bytes(b"x")
    try:
        watch = Watch(proc.root, {("churn", "1"), ("threat", "1")})
        watch._known = {s.pid: s for s in stubs_of(SERVER, proc.root)}
        proc.kill(100)
        watch.check()
        assert not region.exists()
    finally:
        region.unlink(missing_ok=True)
