"""Node-RED's storage nodes ``file`` and ``file in`` outside Node-RED: on a per-account file store.

A hosted platform never lets a flow touch the server's filesystem. The step engine keeps a
durable **virtual filesystem per account** instead (:mod:`fluxo_core.storage.nodered_files`):

* a file name is a POSIX path in the account's own namespace: :func:`virtual_path` normalizes
  it (``.`` and ``..`` resolved inside it, never above its root ``/``); a relative name is taken
  from the root, as Node-RED takes it from its working directory, so ``a.txt``, ``./a.txt`` and
  ``/x/../a.txt`` are the same file;
* directories are kept too: the root and ``/tmp`` always exist (as on the host a Node-RED runs
  on), others are made by a ``file`` node with "create directory" (``createDir``); writing into
  a directory that does not exist fails as on Node-RED (``ENOENT``);
* what a node reads comes in its call (:data:`FILES_KEY`), read in the transaction that makes
  the call, and what a ``file`` node writes comes back as the packet on port
  :data:`FILES_PORT`, applied in the transaction that takes the step's result: written once
  however often the call is delivered.

The nodes (Node-RED 4.1's ``10-file.js``): ``file`` writes (``overwriteFile: "true"``),
appends (``"false"``) or deletes (``"delete"``) the file named in its configuration or by
``msg.filename``, adding a newline to a non-Buffer payload when asked (not after the last part
of a string sequence), encoding the text with ``encoding``; ``file in`` reads the file as one
string (``format: "utf8"``) or one message per line (``"lines"``, with ``parts``), decoding it
with ``encoding``. A ``file`` node that appends sends its message on even when the append
fails (its write callback runs either way), as on Node-RED; one that writes or deletes does not.
:func:`file_node_problem` refuses what is not reproduced: output as Buffers
(``format`` ``""`` and ``"stream"``, which a JSON message cannot carry), an encoding chosen by
the message or outside :data:`ENCODINGS`, a file name taken from anything but a string or a
message property. A ``file in`` with ``sendError`` (true when the node does not say) sends
the message on when it cannot read the file, without its payload and with ``msg.error``: the
step engine carries it without a payload too (``engines.step._nodered.token_of``), not as
``payload: null``.

Not reproduced, and not told by the check: a Node-RED ``file`` node appending to a fixed file
name keeps its stream open across messages, so once opening it failed (a missing directory) it
keeps failing until the flow is redeployed; here each message tries again.

The text codecs are iconv-lite's (Node-RED's ``encode``/``decode``): ``none`` is Node's own
UTF-8; ``utf8`` and ``utf16le``/``ucs2`` drop a byte order mark when decoding; ``base64`` and
``hex`` turn text into the bytes it encodes and back; ``binary`` and ``latin1`` map a byte to a
character. JavaScript strings are UTF-16: a character outside the BMP is two code units wherever
Node counts units (``binary``, ``latin1`` encode each unit).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from nodered_semantics.js import UNDEFINED, JSThrowError, js_json, js_string
from nodered_semantics.msg_paths import get_property

__all__ = [
    "ENCODINGS",
    "FILES_KEY",
    "FILES_PORT",
    "FILE_TYPES",
    "MAX_PATH_CHARS",
    "READ_CHUNK_BYTES",
    "decode_text",
    "encode_text",
    "file_name",
    "file_node_problem",
    "file_target",
    "node_encoding",
    "payload_text",
    "virtual_path",
]

FILE_TYPES = frozenset({"file", "file in"})

FILES_PORT = -3
"""The output "port" of the packet in which the ``nodered-node`` service hands back what a
``file`` node wrote: ``{"port": -3, "ops": [{"path", "op": "write"|"append"|"delete"|"mkdir",
"data"?: base64, "expected"?: version}]}``. No message: the step engine applies it."""

FILES_KEY = "files"
"""The key of a call of a ``file``/``file in`` node that holds the file it names, as read:
``{path: {"kind": "file"|"dir"|"notdir"|"none", "version": n, "data"?: base64}}``, and the
directory it lies in (without data)."""

MAX_PATH_CHARS = 1024
READ_CHUNK_BYTES = 64 * 1024
"""fs.createReadStream's highWaterMark: ``file in`` decodes lines chunk by chunk."""

ENCODINGS = frozenset({"none", "utf8", "ucs2", "utf16le", "binary", "latin1", "base64", "hex"})
"""The encodings reproduced, as iconv-lite names them once normalized (lower case, letters and
digits only: ``utf-16le`` is ``utf16le``)."""

_LATIN1_ALIASES = frozenset({"latin1", "iso88591"})
_NAME_TYPES = frozenset({"str", "msg"})


def _encoding(node: Mapping[str, Any]) -> str:
    raw = node.get("encoding") or "none"
    if raw == "none":
        return "none"
    name = re.sub(r"[^0-9a-z]", "", str(raw).lower())
    return "latin1" if name in _LATIN1_ALIASES else name


def _name_source(node: Mapping[str, Any]) -> tuple[str, str]:
    """The node's filename and its type after Node-RED's pre-3.0 upgrade: an empty filename
    without a type means ``msg.filename``."""
    name = node.get("filename")
    kind = node.get("filenameType")
    if kind in (None, ""):
        if name in (None, ""):
            return "filename", "msg"
        return str(name), "str"
    return ("" if name is None else str(name)), str(kind)


def file_node_problem(node: Mapping[str, Any]) -> str | None:
    """Why the step engine cannot run this ``file``/``file in`` node as Node-RED does, or None."""
    kind = node.get("type")
    _, name_type = _name_source(node)
    if name_type not in _NAME_TYPES:
        return (
            f"its file name comes from a {name_type!r} value; the step engine takes it from a "
            "string or a msg property"
        )
    encoding = _encoding(node)
    if encoding == "setbymsg":
        return "it takes its encoding from msg.encoding; choose the encoding in the node"
    if encoding not in ENCODINGS:
        return (
            f"its encoding {node.get('encoding')!r} is not reproduced on the step engine "
            f"(these are: {', '.join(sorted(ENCODINGS))})"
        )
    if kind == "file":
        mode = str(node.get("overwriteFile", "")).lower()
        if mode not in ("true", "false", "delete"):
            return f"its action {node.get('overwriteFile')!r} is unknown (write, append, delete)"
        return None
    fmt = node.get("format")
    if fmt in ("", None, "stream"):
        return "it sends the file as Buffers, which a JSON message cannot carry"
    if fmt not in ("utf8", "lines"):
        return f"its output format {fmt!r} is unknown"
    return None


def file_name(node: Mapping[str, Any], msg: Mapping[str, Any]) -> str:
    """The file name the node uses for ``msg``, as Node-RED evaluates it ("" when none; a
    ``file in`` drops tabs and line breaks). Raises JSThrowError as evaluating it would."""
    name, kind = _name_source(node)
    value: Any = name
    if kind == "msg":
        value = get_property(msg, name)
    if value is None or value is UNDEFINED:
        value = ""
    elif not isinstance(value, str):
        value = js_string(value)
    if node.get("type") == "file in":
        value = re.sub(r"[\t\r\n]", "", value)
    return str(value)


def virtual_path(name: str) -> str:
    """The path of file ``name`` in an account's namespace: absolute, normalized, ``..`` never
    above the root. Raises ValueError for a name no file can have."""
    if "\0" in name:
        raise ValueError("a file name cannot contain a NUL character")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    path = "/" + "/".join(parts)
    if len(path) > MAX_PATH_CHARS:
        raise ValueError(f"a file path is at most {MAX_PATH_CHARS} characters")
    return path


def file_target(node: Mapping[str, Any], msg: Mapping[str, Any]) -> str | None:
    """The virtual path the node would read or write for ``msg``; None when it names no file
    (it then warns and sends nothing) or a name no file can have (it fails)."""
    try:
        name = file_name(node, msg)
    except JSThrowError:
        return None
    if name == "":
        return None
    try:
        return virtual_path(name)
    except ValueError:
        return None


# -- text codecs ---------------------------------------------------------------------------------

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _units(text: str) -> list[int]:
    """The UTF-16 code units of ``text``."""
    data = text.encode("utf-16-le", "surrogatepass")
    return [data[i] | data[i + 1] << 8 for i in range(0, len(data), 2)]


def _utf8(text: str) -> bytes:
    """``Buffer.from(text)``: a lone surrogate becomes U+FFFD."""
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text.encode("utf-8")


_B64 = re.compile(r"[^A-Za-z0-9+/\-_]")


def _from_base64(text: str) -> bytes:
    """``Buffer.from(text, "base64")``: other characters skipped, ``=`` ends the data, url-safe
    letters accepted, a trailing single character dropped."""
    text = text.split("=", 1)[0]
    clean = _B64.sub("", text).replace("-", "+").replace("_", "/")
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    return base64.b64decode(clean + "=" * (-len(clean) % 4))


def _from_hex(text: str) -> bytes:
    """``Buffer.from(text, "hex")``: pairs up to the first that is not hexadecimal."""
    out = bytearray()
    for i in range(0, len(text) - 1, 2):
        pair = text[i : i + 2]
        if not re.fullmatch(r"[0-9A-Fa-f]{2}", pair):
            break
        out.append(int(pair, 16))
    return bytes(out)


def encode_text(text: str, encoding: str) -> bytes:
    """Node-RED's ``encode(data, enc)``: ``Buffer.from`` for ``none``, iconv-lite otherwise."""
    enc = "latin1" if encoding in _LATIN1_ALIASES else encoding
    if enc in ("none", "utf8"):
        return _utf8(text)
    if enc in ("ucs2", "utf16le"):
        return text.encode("utf-16-le", "surrogatepass")
    if enc == "binary":
        return bytes(u & 0xFF for u in _units(text))
    if enc == "latin1":
        return bytes(u if u < 256 else 0x3F for u in _units(text))
    if enc == "base64":  # iconv-lite encodes whole quads, then what is left over
        whole = len(text) - len(text) % 4
        return _from_base64(text[:whole]) + _from_base64(text[whole:])
    if enc == "hex":
        return _from_hex(text)
    raise ValueError(f"encoding {encoding!r} is not reproduced")


def decode_text(data: bytes, encoding: str) -> str:
    """Node-RED's ``decode(data, enc)``: ``toString()`` for ``none``, iconv-lite otherwise
    (which drops a leading byte order mark in ``utf8`` and ``utf16le``)."""
    enc = "latin1" if encoding in _LATIN1_ALIASES else encoding
    if enc == "none":
        return data.decode("utf-8", "replace")
    if enc == "utf8":
        return data.decode("utf-8", "replace").removeprefix("\ufeff")
    if enc in ("ucs2", "utf16le"):
        text = data[: len(data) - len(data) % 2].decode("utf-16-le", "surrogatepass")
        # a lone surrogate cannot travel in JSON: it becomes U+FFFD
        return _SURROGATE.sub("\ufffd", text).removeprefix("\ufeff")
    if enc in ("binary", "latin1"):
        return data.decode("latin-1")
    if enc == "base64":
        return base64.b64encode(data).decode("ascii")
    if enc == "hex":
        return data.hex()
    raise ValueError(f"encoding {encoding!r} is not reproduced")


def payload_text(payload: Any) -> str:
    """What a ``file`` node writes of a non-Buffer payload, before its newline: a string as
    it is, an object (or null) as JSON, a number or boolean as JavaScript prints it."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bool | int | float):
        return js_string(payload)
    return js_json(payload)


def node_encoding(node: Mapping[str, Any]) -> str:
    """The node's encoding, normalized as iconv-lite looks it up."""
    return _encoding(node)
