"""Node-RED file nodes' semantics: virtual paths, iconv-lite's codecs, the static check, and the
nodes run on a file view (no database; tests/integration/test_step_nrfiles.py runs them on the
step engine, the differential test against a real Node-RED).

The codec cases were computed by Node 20 with the iconv-lite Node-RED 4.1 ships (0.7.3).
"""

from __future__ import annotations

import base64

import pytest

from nodered_semantics.files import (
    decode_text,
    encode_text,
    file_name,
    file_node_problem,
    file_target,
    virtual_path,
)
from nodered_semantics.support import node_problem
from services.nodered.file_node import run_file_node


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("/tmp/hello.txt", "/tmp/hello.txt"),
        ("tmp/hello.txt", "/tmp/hello.txt"),
        ("./tmp//hello.txt", "/tmp/hello.txt"),
        ("../../../etc/passwd", "/etc/passwd"),
        ("/a/b/../../../../c", "/c"),
        ("a/./b/../c.txt", "/a/c.txt"),
        ("..", "/"),
        ("back\\slash", "/back\\slash"),
    ],
)
def test_paths_are_normalized_inside_the_namespace(name: str, path: str) -> None:
    assert virtual_path(name) == path


def test_unusable_names() -> None:
    with pytest.raises(ValueError, match="NUL"):
        virtual_path("a\0b")
    with pytest.raises(ValueError, match="at most 1024"):
        virtual_path("x" * 2000)
    assert file_target({"type": "file", "filename": "", "filenameType": "str"}, {}) is None


# (text, encoding, bytes as hex) from iconv.encode / Buffer.from on Node
ENCODED = [
    ("😀\n", "none", "f09f98800a"),
    ("8J+YgA==\n", "base64", "f09f9880"),
    ("ab\ncd==ef", "base64", "69b71d"),
    ("a-_b", "base64", "6befdb"),
    ("zz12ab", "base64", "cf3d7669"),
    ("abcde", "hex", "abcd"),
    ("abcde", "base64", "69b71d"),
    ("zz12ab", "hex", ""),
    ("0a0b0", "hex", "0a0b"),
    ("é€ÿ", "latin1", "e93fff"),
    ("😀\n", "latin1", "3f3f0a"),
    ("é€ÿ", "binary", "e9acff"),
    ("😀\n", "utf16le", "3dd800de0a00"),
    ("\ud800x", "none", "efbfbd78"),
]


@pytest.mark.parametrize(("text", "encoding", "hexed"), ENCODED)
def test_encode_as_iconv_lite(text: str, encoding: str, hexed: str) -> None:
    assert encode_text(text, encoding).hex() == hexed


DECODED = [
    ("efbbbf6869", "none", "\ufeffhi"),  # toString() keeps the byte order mark
    ("efbbbf6869", "utf8", "hi"),  # iconv-lite drops it
    ("fffe6800", "utf16le", "h"),
    ("c3", "none", "\ufffd"),
    ("e282", "utf8", "\ufffd"),
    ("ff00fe", "utf16le", "\xff"),
    ("f09f98800a", "base64", "8J+YgAo="),
    ("ff00fe", "hex", "ff00fe"),
    ("ff00fe", "latin1", "\xff\x00\xfe"),
]


@pytest.mark.parametrize(("hexed", "encoding", "text"), DECODED)
def test_decode_as_iconv_lite(hexed: str, encoding: str, text: str) -> None:
    assert decode_text(bytes.fromhex(hexed), encoding) == text


def node(kind: str, **config: object) -> dict[str, object]:
    return {"id": "n1", "type": kind, **config}


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (node("file", filename="/a", overwriteFile="true", encoding="none"), None),
        (node("file", filename="", overwriteFile="delete"), None),
        (node("file", filename="/a", overwriteFile=False, encoding="utf-16le"), None),
        (node("file", filename="/a", overwriteFile="true", encoding="setbymsg"), "msg.encoding"),
        (node("file", filename="/a", overwriteFile="true", encoding="koi8-r"), "not reproduced"),
        (node("file", filename="f", filenameType="flow", overwriteFile="true"), "'flow' value"),
        (node("file", filename="/a", overwriteFile="replace"), "unknown"),
        (node("file in", filename="/a", format="utf8", encoding="base64", sendError=False), None),
        (node("file in", filename="/a", format="lines", sendError=False), None),
        (node("file in", filename="/a", format="utf8", sendError=True), None),
        (node("file in", filename="/a", format="utf8"), None),
        (node("file in", filename="/a", format="", sendError=False), "Buffers"),
        (node("file in", filename="/a", format="stream", sendError=False), "Buffers"),
        (node("file in", filename="N", filenameType="env", format="utf8"), "'env' value"),
    ],
)
def test_the_static_check_accepts_what_is_reproduced(
    config: dict[str, object], problem: str | None
) -> None:
    found = file_node_problem(config)
    assert found == node_problem(config)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_file_names_as_nodered_evaluates_them() -> None:
    legacy = node("file", filename="")  # pre-3.0: an empty name means msg.filename
    assert file_name(legacy, {"filename": 42}) == "42"
    assert file_name(node("file in", filename="a\tb\n"), {}) == "ab"
    assert file_name(node("file", filename="f.x", filenameType="msg"), {"f": {"x": "/y"}}) == "/y"


def test_the_file_node_writes_appends_and_deletes_on_its_view() -> None:
    write = node("file", filename="/a", appendNewline=True, overwriteFile="true")
    root = {"/": {"kind": "dir", "version": 0}}
    sent, ops = run_file_node(write, {"payload": {"k": 1.0}}, root)
    assert sent == [(0, {"payload": {"k": 1.0}, "filename": "/a"})]
    assert ops == [{"path": "/a", "op": "write", "data": base64.b64encode(b'{"k":1}\n').decode()}]
    last = {"payload": 2, "parts": {"type": "string", "index": 1, "count": 2}}
    _, ops = run_file_node({**write, "overwriteFile": "false"}, last, root)
    assert ops == [{"path": "/a", "op": "append", "data": base64.b64encode(b"2").decode()}]
    # no payload: nothing written, nothing sent; no file name: the same (Node-RED warns)
    assert run_file_node(write, {}, {}) == ([], [])
    assert run_file_node({**write, "filename": ""}, {"payload": 1}, {}) == ([], [])
    delete = {**write, "overwriteFile": "delete"}
    sent, ops = run_file_node(delete, {"payload": 1}, {"/a": {"kind": "file", "version": 3}})
    assert ops == [{"path": "/a", "op": "delete", "expected": 3}]
    assert sent[0][0] == 0
    sent, ops = run_file_node(delete, {"payload": 1}, {})
    assert ops == []
    assert sent[0][0] == -1
    assert "failed to delete file: Error: ENOENT" in sent[0][1]["message"]


def test_the_file_in_node_reads_lines_across_chunks() -> None:
    data = ("x" * 70000 + "\nend").encode()
    view = {"/f": {"kind": "file", "version": 1, "data": base64.b64encode(data).decode()}}
    reader = node("file in", filename="/f", format="lines", encoding="none")
    sent, ops = run_file_node(reader, {"_msgid": "m1", "topic": "t", "other": 1}, view)
    assert ops == []
    assert [m["payload"] for _, m in sent] == ["x" * 70000, "end"]
    assert sent[0][1] == {"topic": "t", "filename": "/f", "payload": "x" * 70000,
                          "parts": {"index": 0, "ch": "\n", "type": "string", "id": "m1"}}  # fmt: skip
    assert sent[1][1]["parts"]["count"] == 2
    # a character split by the 64 KiB chunks decodes as Node's read stream decodes it
    split = ("x" * 65535 + "é").encode()
    view = {"/f": {"kind": "file", "version": 1, "data": base64.b64encode(split).decode()}}
    sent, _ = run_file_node(reader, {}, view)
    assert sent[0][1]["payload"] == "x" * 65535 + "\ufffd\ufffd"


def test_the_file_node_writes_only_into_a_directory_that_exists() -> None:
    write = node("file", filename="/tmp/HG/x", overwriteFile="true", createDir=False)
    tmp = {"/tmp": {"kind": "dir", "version": 0}, "/tmp/HG": {"kind": "none", "version": 0}}
    sent, ops = run_file_node(write, {"payload": "p"}, tmp)
    assert ops == []
    assert sent[0][0] == -1
    text = "failed to write to file: Error: ENOENT: no such file or directory, open '/tmp/HG/x'"
    assert sent[0][1]["message"] == text
    sent, ops = run_file_node({**write, "createDir": True}, {"payload": "p"}, tmp)
    assert [op["op"] for op in ops] == ["mkdir", "write"]
    assert ops[0]["path"] == "/tmp/HG"
    blocked = {"/tmp/HG": {"kind": "file", "version": 1}}
    sent, ops = run_file_node({**write, "createDir": True}, {"payload": "p"}, blocked)
    assert ops == []
    assert "failed to create file: Error: EEXIST: file already exists, mkdir '/tmp/HG'" in str(sent)


def test_an_append_that_fails_sends_the_message_on_as_on_nodered() -> None:
    append = node("file", filename="/no/x", overwriteFile="false", createDir=False)
    view = {"/no": {"kind": "none", "version": 0}}
    sent, ops = run_file_node(append, {"payload": "p"}, view)
    assert ops == []
    assert [port for port, _ in sent] == [-1, 0]
    assert sent[0][1]["message"].startswith("failed to append to file: Error: ENOENT")
    sent, _ = run_file_node({**append, "overwriteFile": "true"}, {"payload": "p"}, view)
    assert [port for port, _ in sent] == [-1]
