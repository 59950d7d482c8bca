"""Node-RED file nodes on the step engine: a durable virtual filesystem per account.

Each test runs on SQLite and PostgreSQL (the ``db`` fixture). The differential test
(tests/integration/nodered, the storage examples) compares the same semantics with a real
Node-RED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engines.step import NODERED_MSG_CONTENT_TYPE
from fluxo.control.platform import Platform
from fluxo_core.storage import Database, Principal
from fluxo_core.storage.nodered_files import NodeRedFileStore
from tests.support.nodered_platform import nodered_platform
from translators.nodered import from_nodered

pytestmark = pytest.mark.timeout(120)

ADA = Principal(account_id="acme", user_id="ada")
BOB = Principal(account_id="other", user_id="bob")
MSG = {"content-type": NODERED_MSG_CONTENT_TYPE}


WHY = "msg.payload = {caught: msg.error.message, from: msg.error.source.id}; return msg;"


def file_flow(
    mode: str = "false", *, read: str = "utf8", newline: bool = True, mkdir: bool = True
) -> list[dict[str, Any]]:
    """inject -> file (file name from msg.filename) -> file in (the same) -> debug."""
    return [
        {"id": "tab1", "type": "tab", "label": "Files"},
        {"id": "in1", "type": "inject", "z": "tab1", "x": 0, "y": 0, "wires": [["f1"]]},
        {"id": "f1", "type": "file", "z": "tab1", "filename": "filename", "filenameType": "msg",
         "appendNewline": newline, "createDir": mkdir, "overwriteFile": mode, "encoding": "none",
         "x": 1, "y": 0, "wires": [["r1"]]},
        {"id": "r1", "type": "file in", "z": "tab1", "filename": "", "format": read,
         "sendError": False, "encoding": "none", "x": 2, "y": 0, "wires": [["dbg1"]]},
        {"id": "dbg1", "type": "debug", "z": "tab1", "x": 3, "y": 0, "wires": []},
        {"id": "c1", "type": "catch", "z": "tab1", "scope": None, "uncaught": False, "x": 0,
         "y": 1, "wires": [["why"]]},
        {"id": "why", "type": "function", "z": "tab1", "func": WHY, "outputs": 1, "x": 1, "y": 1,
         "wires": [["dbg2"]]},
        {"id": "dbg2", "type": "debug", "z": "tab1", "x": 2, "y": 1, "wires": []},
    ]  # fmt: skip


def imported(flow: list[dict[str, Any]], name: str = "files") -> dict[str, Any]:
    doc = from_nodered(flow).workflows[0].model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("engine", None)
    doc["metadata"] = {"name": name}
    return doc


@pytest.fixture
async def fluxo(db: Database) -> AsyncIterator[Platform]:
    async with nodered_platform(db) as platform:
        yield platform


def step_engine(fluxo: Platform) -> Any:
    return next(e for e in fluxo.registry.engines() if e.name == "step")


async def run(fluxo: Platform, who: Principal, msg: dict[str, Any], name: str = "files") -> Any:
    job = await fluxo.jobs.create(who, name, msg, headers=MSG)
    done = await fluxo.jobs.wait(who, job.id, 30)
    assert done.status == "succeeded", done.error
    return done


async def test_files_outlive_the_job_and_stay_in_their_account(fluxo: Platform) -> None:
    await fluxo.jobs.apply(imported(file_flow()), ADA)
    await fluxo.jobs.apply(imported(file_flow()), BOB)
    one = {"payload": "one", "filename": "/tmp/hello.txt"}
    assert (await run(fluxo, ADA, one)).result == "one\n"
    two = {"payload": "two", "filename": "/tmp/hello.txt"}
    assert (await run(fluxo, ADA, two)).result == "one\ntwo\n"
    # the other account's file of the same name is its own
    assert (await run(fluxo, BOB, {"payload": 3, "filename": "/tmp/hello.txt"})).result == "3\n"
    store = NodeRedFileStore(fluxo.db)
    assert await store.get("acme", "/tmp/hello.txt") == b"one\ntwo\n"
    assert await store.get("other", "/tmp/hello.txt") == b"3\n"
    assert await store.paths("acme") == ["/tmp/hello.txt"]  # /tmp is there from the start


async def test_paths_stay_inside_the_accounts_namespace(fluxo: Platform, tmp_path: Path) -> None:
    await fluxo.jobs.apply(imported(file_flow("true")), ADA)
    real = tmp_path / "real.txt"
    real.write_text("the server's own file")
    escape = "/tmp/../../../../.." + str(real)
    done = await run(fluxo, ADA, {"payload": {"a": 1}, "filename": escape})
    assert done.result == '{"a":1}\n'
    assert real.read_text() == "the server's own file"  # untouched
    store = NodeRedFileStore(fluxo.db)
    # ".." never climbs above the account's root; relative names start from it
    assert str(real) in await store.paths("acme")
    await run(fluxo, ADA, {"payload": "rel", "filename": "a/./b/../c.txt"})
    assert await store.get("acme", "/a/c.txt") == b"rel\n"
    # /etc/passwd of the account is a file like any other, not the server's
    assert (await run(fluxo, ADA, {"payload": "x", "filename": "../etc/passwd"})).result == "x\n"
    assert await store.get("other", "/etc/passwd") is None


def caught(done: Any) -> list[Any]:
    """What the flow's catch node described: the failures the file nodes reported."""
    states = {s.step_id: s for s in done.steps or []}
    if "function" not in states:
        return []
    return [o["msg"]["payload"] for o in states["function"].output]


async def test_failures_are_reported_to_catch_as_on_nodered(fluxo: Platform) -> None:
    flow = file_flow("delete")
    await fluxo.jobs.apply(imported(flow), ADA)
    store = NodeRedFileStore(fluxo.db)
    # deleting a file that is not there reports the failure and sends nothing
    done = await run(fluxo, ADA, {"payload": 1, "filename": "/nothing.txt"})
    states = {s.step_id: s for s in done.steps or []}
    assert states["file"].output == []
    assert "file-in" not in states
    assert caught(done) == [
        {
            "caught": "failed to delete file: Error: ENOENT: no such file or directory, "
            "unlink '/nothing.txt'",
            "from": "f1",
        }
    ]
    # a file written, then deleted: the file in node finds it gone
    await fluxo.jobs.apply(imported(file_flow("true"), "writer"), ADA)
    await run(fluxo, ADA, {"payload": "x", "filename": "/d/f.txt"}, "writer")
    done = await run(fluxo, ADA, {"payload": 1, "filename": "/d/f.txt"})
    assert await store.get("acme", "/d/f.txt") is None
    assert caught(done) == [
        {"caught": "Error: ENOENT: no such file or directory, open '/d/f.txt'", "from": "r1"}
    ]
    # a directory cannot be read as a file
    await run(fluxo, ADA, {"payload": "y", "filename": "/d/e/g.txt"}, "writer")
    reader = file_flow()
    reader[1]["wires"] = [["r1"]]  # inject -> file in -> debug
    await fluxo.jobs.apply(imported(reader[:2] + reader[3:], "reader"), ADA)
    done = await run(fluxo, ADA, {"payload": 1, "filename": "/d/e"}, "reader")
    assert caught(done) == [
        {"caught": "Error: EISDIR: illegal operation on a directory, read", "from": "r1"}
    ]


async def test_lines_become_a_message_sequence(fluxo: Platform) -> None:
    await fluxo.jobs.apply(imported(file_flow("true", read="lines")), ADA)
    done = await run(fluxo, ADA, {"payload": "a\nb", "filename": "l.txt"})
    states = {s.step_id: s for s in done.steps or []}
    msgs = [o["msg"] for o in states["file-in"].output]
    assert [m["payload"] for m in msgs] == ["a", "b", ""]
    assert [m["parts"]["index"] for m in msgs] == [0, 1, 2]
    assert msgs[-1]["parts"]["count"] == 3
    assert "count" not in msgs[0]["parts"]
    assert all(m["filename"] == "l.txt" for m in msgs)


async def test_files_past_their_bounds_fail_the_step_naming_file_and_limit(
    fluxo: Platform,
) -> None:
    engine = step_engine(fluxo)
    engine.files.max_file_bytes = 10
    engine.files.max_account_bytes = 15
    await fluxo.jobs.apply(imported(file_flow()[:5]), ADA)  # without its catch node
    await run(fluxo, ADA, {"payload": "12345678", "filename": "/a.txt"})  # 9 bytes
    job = await fluxo.jobs.create(ADA, "files", {"payload": "x", "filename": "/a.txt"}, headers=MSG)
    done = await fluxo.jobs.wait(ADA, job.id, 30)
    assert done.status == "failed"
    assert "file '/a.txt' would hold 11 bytes, over the limit of 10" in str(done.error)
    job = await fluxo.jobs.create(
        ADA, "files", {"payload": "123456", "filename": "/b"}, headers=MSG
    )
    done = await fluxo.jobs.wait(ADA, job.id, 30)
    assert done.status == "failed"
    assert "account's Node-RED files hold 16 bytes, over the limit of 15" in str(done.error)
    store = NodeRedFileStore(fluxo.db)
    assert await store.paths("acme") == ["/a.txt"]  # the failed steps wrote nothing
    assert await store.get("acme", "/a.txt") == b"12345678\n"
    # with a catch node, the refusal reaches it as a failure of the file node
    await fluxo.jobs.apply(imported(file_flow(), "caught"), ADA)
    done = await run(fluxo, ADA, {"payload": "x", "filename": "/a.txt"}, "caught")
    assert "over the limit of 10" in caught(done)[0]["caught"]


async def test_a_result_delivered_twice_writes_once(fluxo: Platform) -> None:
    await fluxo.jobs.apply(imported(file_flow()), ADA)
    done = await run(fluxo, ADA, {"payload": "once", "filename": "/twice.txt"})
    writer = next(s for s in done.steps or [] if s.step_id == "file")
    engine = step_engine(fluxo)
    plans = await engine._plans_for({done.id})
    call_id = await fluxo.db.transact(
        lambda tx: tx.execute(
            __import__("sqlalchemy").text(
                "SELECT call_id FROM job_steps WHERE job_id = :j AND step_id = 'file'"
            ),
            {"j": done.id},
        ).scalar_one()
    )
    assert writer.phase == "succeeded"
    # the call's result applied again (a redelivery past the inbox): the append is not repeated
    await fluxo.db.transact(
        lambda tx: engine._apply(tx, plans, [("result", done.id, call_id, None)])
    )
    store = NodeRedFileStore(fluxo.db)
    assert await store.get("acme", "/twice.txt") == b"once\n"


async def test_concurrent_appends_all_land(fluxo: Platform) -> None:
    await fluxo.jobs.apply(imported(file_flow()), ADA)
    msgs = [{"payload": f"line {i}", "filename": "/log.txt"} for i in range(8)]
    jobs = [await fluxo.jobs.create(ADA, "files", m, headers=MSG) for m in msgs]
    for job in jobs:
        done = await fluxo.jobs.wait(ADA, job.id, 60)
        assert done.status == "succeeded", done.error
    data = await NodeRedFileStore(fluxo.db).get("acme", "/log.txt")
    assert data is not None
    assert sorted(data.decode().splitlines()) == [f"line {i}" for i in range(8)]


async def test_directories_exist_when_made_as_on_a_fresh_host(fluxo: Platform) -> None:
    await fluxo.jobs.apply(imported(file_flow("true", mkdir=False), "plain"), ADA)
    await fluxo.jobs.apply(imported(file_flow("true", mkdir=True), "making"), ADA)
    # /tmp exists, /tmp/HG does not: without createDir the write fails (ENOENT) and sends nothing
    assert (await run(fluxo, ADA, {"payload": 1, "filename": "/tmp/x"}, "plain")).result == "1\n"
    done = await run(fluxo, ADA, {"payload": 1, "filename": "/tmp/HG/x"}, "plain")
    assert {s.step_id: s for s in done.steps or []}["file"].output == []
    assert caught(done)[0]["caught"] == (
        "failed to write to file: Error: ENOENT: no such file or directory, open '/tmp/HG/x'"
    )
    store = NodeRedFileStore(fluxo.db)
    assert await store.get("acme", "/tmp/HG/x") is None
    # with createDir it is made, with the directories above it
    assert (await run(fluxo, ADA, {"payload": 2, "filename": "/a/b/c"}, "making")).result == "2\n"
    assert await store.paths("acme") == ["/a", "/a/b", "/a/b/c", "/tmp/x"]
    assert (await run(fluxo, ADA, {"payload": 3, "filename": "/a/b/d"}, "plain")).result == "3\n"
    # a file cannot hold a directory
    done = await run(fluxo, ADA, {"payload": 4, "filename": "/a/b/c/e"}, "making")
    assert {s.step_id: s for s in done.steps or []}["file"].output == []
    assert await store.get("acme", "/a/b/c") == b"2\n"


async def test_the_store_applies_nothing_the_node_did_not_see(db: Database) -> None:
    store = NodeRedFileStore(db)

    def apply(*ops: dict[str, Any]) -> Any:
        return db.transact(lambda tx: store.apply(tx, "acme", ops))

    def kinds(*paths: str) -> Any:
        return db.transact(lambda tx: {p: s.kind for p, s in store.read(tx, "acme", paths).items()})

    assert await apply({"path": "/d", "op": "mkdir"}, {"path": "/d/f", "op": "write", "data": b"1"})
    # a delete that read an older version (or no file) changes nothing
    assert not await apply({"path": "/d/f", "op": "delete", "expected": 0})
    assert await store.get("acme", "/d/f") == b"1"
    assert await apply({"path": "/d/f", "op": "delete", "expected": 1})
    assert await store.get("acme", "/d/f") is None
    # a directory where a file is written, a file where a directory is made: nothing applied
    assert not await apply({"path": "/d", "op": "write", "data": b"x"})
    assert await apply({"path": "/f", "op": "write", "data": b"x"})
    assert not await apply({"path": "/f/g", "op": "mkdir"})
    assert await store.paths("acme") == ["/d", "/f"]
    assert await kinds("/", "/tmp", "/d", "/f", "/f/g/h", "/x") == {
        "/": "dir",
        "/tmp": "dir",
        "/d": "dir",
        "/f": "file",
        "/f/g/h": "notdir",
        "/x": "none",
    }
    # the other account sees none of it
    other = await db.transact(lambda tx: store.read(tx, "other", ["/f", "/d"]))
    assert {p: s.kind for p, s in other.items()} == {"/f": "none", "/d": "none"}


HAS = (
    "msg.payload = {type: typeof msg.payload, has: 'payload' in msg, isNull: msg.payload === null,"
    " code: msg.error && msg.error.code, filename: msg.filename}; return msg;"
)


@pytest.mark.parametrize("send_error", [True, None])
async def test_a_file_in_that_sends_on_error_sends_no_payload(
    fluxo: Platform, send_error: bool | None
) -> None:
    """Node-RED's file in with sendError (true when not given) sends the message on without
    its payload when it cannot read the file: the next node sees msg.payload undefined."""
    reader: dict[str, Any] = {
        "id": "r1", "type": "file in", "z": "tab1", "filename": "", "format": "utf8",
        "encoding": "none", "x": 1, "y": 0, "wires": [["has"]],
    }  # fmt: skip
    if send_error is not None:
        reader["sendError"] = send_error
    flow = [
        {"id": "tab1", "type": "tab", "label": "Files"},
        {"id": "in1", "type": "inject", "z": "tab1", "x": 0, "y": 0, "wires": [["r1"]]},
        reader,
        {"id": "has", "type": "function", "z": "tab1", "func": HAS, "outputs": 1, "x": 2, "y": 0,
         "wires": [["dbg1"]]},
        {"id": "dbg1", "type": "debug", "z": "tab1", "x": 3, "y": 0, "wires": []},
    ]  # fmt: skip
    await fluxo.jobs.apply(imported(flow, "reader"), ADA)
    done = await run(fluxo, ADA, {"payload": "kept?", "filename": "/none.txt"}, "reader")
    assert done.result == {
        "type": "undefined",
        "has": False,
        "isNull": False,
        "code": "ENOENT",
        "filename": "/none.txt",
    }
    # a file that is there: read as before
    await fluxo.jobs.apply(imported(file_flow("true"), "writer"), ADA)
    await run(fluxo, ADA, {"payload": "x", "filename": "/there.txt"}, "writer")
    done = await run(fluxo, ADA, {"payload": 1, "filename": "/there.txt"}, "reader")
    assert done.result["type"] == "string"
