"""Node-RED's ``file`` and ``file in`` nodes on an account's virtual file store.

The caller hands in the file the node names, as it read it (:data:`~nodered_semantics.files.
FILES_KEY`: ``{path: {"kind", "version", "data"?}}``); what a ``file`` node writes comes back
as operations (:data:`~nodered_semantics.files.FILES_PORT`) for the caller to apply. Semantics:
:mod:`nodered_semantics.files` (Node-RED 4.1's ``10-file.js``).

Failures are reported as Node-RED reports them, ``node.error(err, msg)`` (a packet on
:data:`~nodered_semantics.support.REPORTED_PORT`), with Node's error texts (``ENOENT: no such
file or directory, open '/tmp/x'``); a ``file in`` with ``sendError`` also sends the message
without its payload and with ``msg.error`` (``{message, code, errno, syscall, path}``), which
the step engine carries on without a payload (not as ``payload: null``).
"""

from __future__ import annotations

import base64
import copy
import posixpath
from collections.abc import Mapping
from typing import Any

from nodered_semantics.files import (
    READ_CHUNK_BYTES,
    decode_text,
    encode_text,
    file_name,
    node_encoding,
    payload_text,
    virtual_path,
)
from nodered_semantics.js import JSThrowError
from nodered_semantics.support import REPORTED_PORT
from services.nodered.common import Sent

__all__ = ["FileOp", "run_file_node"]

FileOp = dict[str, Any]

_ERRNO = {"ENOENT": -2, "EISDIR": -21, "ENOTDIR": -20, "EINVAL": -22, "EEXIST": -17}
_TEXT = {
    "ENOENT": "no such file or directory",
    "EISDIR": "illegal operation on a directory",
    "ENOTDIR": "not a directory",
    "EINVAL": "invalid argument",
    "EEXIST": "file already exists",
}


def _fs_error(code: str, syscall: str, name: str) -> dict[str, Any]:
    """A Node fs error as a JSON object (what ``msg.error`` holds)."""
    where = f", {syscall} '{name}'" if code != "EISDIR" or syscall != "read" else f", {syscall}"
    out = {"message": f"{code}: {_TEXT[code]}{where}", "code": code, "errno": _ERRNO[code]}
    out["syscall"] = syscall
    if code != "EISDIR" or syscall != "read":
        out["path"] = name
    return out


def _report(text: str, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return (REPORTED_PORT, {"message": text, "msg": msg})


def _state(files: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    found = files.get(path)
    return found if isinstance(found, Mapping) else {"kind": "none", "version": 0}


def run_file_node(
    node: Mapping[str, Any], msg: dict[str, Any], files: Mapping[str, Any]
) -> tuple[Sent, list[FileOp]]:
    """Run a ``file`` or ``file in`` node on ``msg`` (a copy it may change), the file it names
    as read in ``files``: the messages it sends, and what it writes."""
    try:
        name = file_name(node, msg)
    except JSThrowError as exc:
        return [_report(str(exc), msg)], []
    if name == "":  # Node-RED warns "No filename specified" and sends nothing
        return [], []
    if node.get("type") == "file in":
        return _read(node, msg, name, files), []
    return _write(node, msg, name, files)


def _write(
    node: Mapping[str, Any], msg: dict[str, Any], name: str, files: Mapping[str, Any]
) -> tuple[Sent, list[FileOp]]:
    msg["filename"] = name
    mode = str(node.get("overwriteFile", "")).lower()
    try:
        path = virtual_path(name)
    except ValueError as exc:
        return [_report(f"failed to write to file: Error: {exc}", msg)], []
    state = _state(files, path)
    kind = state.get("kind")
    if mode == "delete":
        if kind == "file":
            return [(0, msg)], [{"path": path, "op": "delete", "expected": state.get("version")}]
        code = {"dir": "EISDIR", "notdir": "ENOTDIR"}.get(str(kind), "ENOENT")
        error = _fs_error(code, "unlink", name)["message"]
        return [_report(f"failed to delete file: Error: {error}", msg)], []
    if "payload" not in msg:
        return [], []
    text = payload_text(msg["payload"])
    parts = msg.get("parts")
    last_part = False  # the last part of a string sequence gets no newline
    if isinstance(parts, Mapping) and parts.get("type") == "string":
        count, index = parts.get("count"), parts.get("index")
        if isinstance(index, int | float) and not isinstance(index, bool):
            last_part = isinstance(count, int | float) and count == index + 1
    if node.get("appendNewline") and not last_part:
        text += "\n"  # os.EOL on the Linux Node-RED runs on
    verb = "write" if mode == "true" else "append"
    ops: list[FileOp] = []
    parent = posixpath.dirname(path)
    parent_kind = _state(files, parent).get("kind")
    if node.get("createDir"):  # fs.ensureDirSync(dirname): made with those above it
        if parent_kind in ("file", "notdir"):
            code = "EEXIST" if parent_kind == "file" else "ENOTDIR"
            error = _fs_error(code, "mkdir", posixpath.dirname(name) or ".")["message"]
            return [_report(f"failed to create file: Error: {error}", msg)], []
        if parent_kind != "dir":
            ops.append({"path": parent, "op": "mkdir"})
            parent_kind = "dir"
    if kind in ("dir", "notdir") or parent_kind != "dir":
        code = {"dir": "EISDIR", "notdir": "ENOTDIR"}.get(str(kind), "ENOENT")
        error = _fs_error(code, "open", name)["message"]
        sent = [_report(f"failed to {verb} to file: Error: {error}", copy.deepcopy(msg))]
        if verb == "append":  # its write callback sends the message on, failed or not
            sent.append((0, msg))
        return sent, []
    data = encode_text(text, node_encoding(node))
    ops.append({"path": path, "op": verb, "data": base64.b64encode(data).decode("ascii")})
    return [(0, msg)], ops


def _read(
    node: Mapping[str, Any], msg: dict[str, Any], name: str, files: Mapping[str, Any]
) -> Sent:
    msg["filename"] = name
    try:
        path = virtual_path(name)
        state = _state(files, path)
    except ValueError:
        state = {"kind": "invalid"}
    kind = state.get("kind")
    if kind != "file":
        if kind == "dir":
            error = _fs_error("EISDIR", "read", name)
        elif kind == "notdir":
            error = _fs_error("ENOTDIR", "open", name)
        elif kind == "invalid":
            error = _fs_error("EINVAL", "open", name)
        else:
            error = _fs_error("ENOENT", "open", name)
        sent: Sent = [_report(f"Error: {error['message']}", copy.deepcopy(msg))]
        if node.get("sendError", True):
            failed = copy.deepcopy(msg)
            failed.pop("payload", None)
            failed["error"] = error
            sent.append((0, failed))
        return sent
    data = base64.b64decode(str(state.get("data") or ""))
    encoding = node_encoding(node)
    if node.get("format") == "utf8":
        msg["payload"] = decode_text(data, encoding)
        return [(0, msg)]
    # lines: each chunk the read stream gives is decoded on its own, then split at "\n"
    sent = []
    spare = ""
    count = 0

    def line(payload: str, last: bool) -> tuple[int, dict[str, Any]]:
        if node.get("allProps"):
            out = copy.deepcopy(msg)
        else:
            out = {k: msg[k] for k in ("topic", "filename") if k in msg}
        out["payload"] = payload
        parts: dict[str, Any] = {"index": count, "ch": "\n", "type": "string"}
        if last:
            parts["count"] = count + 1
        if "_msgid" in msg:
            parts["id"] = msg["_msgid"]
        out["parts"] = parts
        return (0, out)

    for start in range(0, len(data), READ_CHUNK_BYTES):
        spare += decode_text(data[start : start + READ_CHUNK_BYTES], encoding)
        bits = spare.split("\n")
        for bit in bits[:-1]:
            sent.append(line(bit, False))
            count += 1
        spare = bits[-1]
    sent.append(line(spare, True))
    return sent
