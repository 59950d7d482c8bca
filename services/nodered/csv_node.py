"""The ``csv`` node in legacy mode (the default): text with a header line or column names into
objects (one message per row, or one array), and objects or arrays into CSV text. What a node
keeps between messages is its state (:mod:`services.nodered.state`): a header sent ``once``
(until ``msg.reset``), the column names a sequence's first line gave (``hdrin``), the rows of
a sequence joined into one array; such a node takes a job's messages together, in order (see
:func:`nodered_semantics.support.is_sequence_node`). RFC 4180 mode is refused."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from nodered_semantics.js import UNDEFINED, js_json, js_number, js_strict_equal, js_string
from services.nodered.common import node_error

__all__ = ["run_csv"]

_CSV_NUMBER = re.compile(r"^[-]?(?!E)(?!0\d)\d*\.?\d*(E-?\+?)?\d+$", re.IGNORECASE)


def _unescape(text: str) -> str:
    return text.replace("\\t", "\t").replace("\\n", "\n").replace("\\r", "\r")


def _clean(columns: str, sep: str) -> list[str]:
    """Column names from a template: split on ``sep`` outside quotes, unquoted, trimmed."""
    pattern = re.escape(sep) + r'(?=(?:(?:[^"]*"){2})*[^"]*$)'
    return [c.replace('"', "").strip() for c in re.split(pattern, columns.strip())]


def run_csv(
    node: Mapping[str, Any], msg: dict[str, Any], state: dict[str, Any] | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """``state``: what the node keeps between messages (whether it sent its header ``once``,
    :mod:`services.nodered.state`), changed in place; None refuses a header sent once."""
    if node.get("spec") == "rfc":
        raise node_error(
            node, "RFC 4180 mode is not supported on the step engine yet; use legacy mode"
        )
    if state is not None and "reset" in msg:
        state.pop("header_sent", None)
    if "payload" not in msg:
        return [] if "reset" in msg else [(0, msg)]
    payload = msg["payload"]
    if isinstance(payload, dict | list):
        return _csv_out(node, msg, state)
    if isinstance(payload, str):
        return _csv_in(node, msg, state)
    return []  # Node-RED warns "csv_js" and sends nothing


def _csv_out(
    node: Mapping[str, Any], msg: dict[str, Any], state: dict[str, Any] | None
) -> list[tuple[int, dict[str, Any]]]:
    sep = _unescape(str(node.get("sep") or ","))
    ret = _unescape(str(node.get("ret") or "\n"))
    quo = '"'
    hdrout = node.get("hdrout") or "none"
    hdrout = (
        {False: "none", True: "all"}.get(hdrout, hdrout) if isinstance(hdrout, bool) else hdrout
    )
    if hdrout == "once":
        if state is None:
            raise node_error(node, "a header sent once per deployment depends on earlier messages")
        if state.get("header_sent"):
            hdrout = "none"
        else:
            state["header_sent"] = True
    template = _clean(str(node.get("temp") or ""), ",")
    payload = msg["payload"]
    rows: list[Any] = payload if isinstance(payload, list) else [payload]
    msg["payload"] = rows
    lines: list[str] = []

    def no_template() -> bool:
        return len(template) == 1 and template[0] == ""

    if hdrout != "none":
        if no_template():
            if "columns" in msg:
                template = _clean(str(msg["columns"] or ""), ",")
            elif rows and isinstance(rows[0], dict):
                template = list(rows[0].keys())
            else:
                template = []
        lines.append(sep.join(f'"{v}"' if sep in v else v for v in template))

    def quoted(text: str, *, newline: bool) -> str:
        if quo in text:
            return quo + text.replace('"', '""') + quo
        if sep in text or (newline and "\n" in text):
            return quo + text + quo
        return text

    s = 0
    while s < len(rows):
        row = rows[s]
        if isinstance(row, list) or not isinstance(row, dict):
            if not isinstance(row, dict | list):
                rows = [rows]
                row = rows[s]
            lines.append(
                sep.join(quoted("" if v is None else js_string(v), newline=True) for v in row)
            )
        else:
            if no_template() and "columns" in msg:
                template = _clean(str(msg["columns"] or ""), ",")
            if no_template():
                first = rows[0] if isinstance(rows[0], dict) else {}
                cells = []
                for key in first:
                    if (
                        key in row
                        and not isinstance(row[key], dict | list)
                        and row[key] is not None
                    ):
                        text = js_string(row[key])
                        if quo in text:
                            cells.append(quo + text.replace('"', '""') + quo)
                        elif sep in text or "\n" in key:
                            cells.append(quo + text + quo)
                        else:
                            cells.append(text)
                lines.append(sep.join(cells))
            else:
                cells = []
                for column in template:
                    if column == "":
                        cells.append("")
                        continue
                    value = row.get(column, UNDEFINED)
                    text = "" if value is UNDEFINED else _ensure_string(value)
                    cells.append(quoted(text, newline=True))
                lines.append(sep.join(cells))
        s += 1
    msg["payload"] = ret.join(lines) + ret
    msg["columns"] = ",".join(f'"{v}"' if "," in v else v for v in template)
    return [(0, msg)] if msg["payload"] != "" else []


def _ensure_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list) or value is None:
        return js_json(value)
    return js_string(value)


def _csv_in(
    node: Mapping[str, Any], msg: dict[str, Any], state: dict[str, Any] | None = None
) -> list[tuple[int, dict[str, Any]]]:
    sep = _unescape(str(node.get("sep") or ","))
    quo = '"'
    multi = node.get("multi") or "one"
    hdrin = node.get("hdrin") is True
    skip = int(node.get("skip") or 0)
    parse_numbers = node.get("strings", True) is not False
    keep_empty = bool(node.get("include_empty_strings"))
    keep_null = bool(node.get("include_null_values"))
    template = _clean(str(node.get("temp") or ""), ",")
    good = not (len(template) == 1 and template[0] == "")
    parts = msg.get("parts") if isinstance(msg.get("parts"), dict) else None
    line: str = msg["payload"]
    newlines = len(re.findall(r"[\r\n]", line))
    # One line of a sequence into one array: the rows are kept (the node's state) until the
    # sequence's last message sends them all.
    joining = parts is not None and multi != "one" and newlines <= 1
    if joining and state is None:
        raise node_error(
            node,
            "joining a message sequence (msg.parts) into one array needs the earlier "
            "messages, which the step engine does not keep; join the lines before this node",
        )
    first, last, linecount = True, False, 0
    if parts is not None:
        linecount = int(parts.get("index", 0))
        if linecount > skip:
            first = False
        if "count" in parts and linecount + 1 >= parts["count"]:
            last = True
    if parts is not None and multi == "mult" and newlines > 1:
        first = True
    # The column names a sequence's first message gave (hdrin) name the rest's cells: Node-RED
    # keeps them in the running node, here the node's state.
    learning = hdrin and parts is not None and state is not None
    if learning and not first and state is not None and "template" in state:
        template, good = list(state["template"]), bool(state.get("good"))

    def column(j: int) -> str:
        nonlocal template
        while len(template) <= j:
            template.append("")
        if not good:
            template[j] = f"col{j + 1}"
        return template[j]

    def finish(j: int, value: str | None, row: dict[str, Any]) -> None:
        name = column(j)
        if not name:
            return
        out: Any = value
        if value is not None and parse_numbers and _CSV_NUMBER.match(value.strip()):
            number = float(value.strip())
            out = int(number) if number.is_integer() and abs(number) < 1e21 else number
        if (keep_null and out is None) or (keep_empty and out == "") or out not in (None, ""):
            row[name] = out

    inside = False
    j = 0
    cells: list[str | None] = [""]
    row: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    header = ""
    for i, ch in enumerate(line):
        if first and linecount < skip:
            if ch == "\n":
                linecount += 1
            continue
        if hdrin and first:
            if ch in "\n\r" or len(line) - i == 1:
                if len(line) - i == 1:
                    header += ch
                template = _clean(header, sep)
                good = not (len(template) == 1 and template[0] == "")
                first = False
                if learning and state is not None:
                    state.update(template=list(template), good=good)
            else:
                header += ch
            continue
        prev = line[i - 1] if i > 0 else ""
        if ch == quo:
            inside = not inside
            if prev == quo and inside:
                cells[j] = (cells[j] or "") + '"'
        elif ch == sep and not inside:
            value: str | None = cells[j]
            if prev == sep or prev in ("\n",):
                value = None
            finish(j, value, row)
            j += 1
            cells.append(None if i == len(line) - 1 else "")
        elif ch in "\n\r" and not inside:
            value = None if prev == sep else cells[j]
            finish(j, value, row)
            if row:
                rows.append(row)
            j, cells, row, inside = 0, [""], {}, False
        else:
            cells[j] = (cells[j] or "") + ch
    finish(j, cells[j], row)
    if row:
        rows.append(row)
    columns = ",".join(f'"{v}"' if "," in v else v for v in template if v)
    if joining and parts is not None and state is not None:
        held = state.setdefault("rows", [])
        if row:  # Node-RED keeps the row the text ends in (none after a final line break)
            held.append(row)
        if not js_strict_equal(js_number(parts.get("index")) + 1, parts.get("count", UNDEFINED)):
            return []
        msg["payload"] = state.pop("rows")
        msg["columns"] = columns
        del msg["parts"]
        return [(0, msg)]
    if multi != "one":
        msg["payload"] = rows
        msg["columns"] = columns
        return [(0, msg)]
    sent: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(rows):
        out = copy.deepcopy(msg)
        out["columns"] = columns
        out["payload"] = item
        if parts is None:
            out["parts"] = {"id": msg.get("_msgid"), "index": index, "count": len(rows)}
        else:
            shift = skip + (1 if hdrin else 0)
            out["parts"]["index"] -= shift
            out["parts"]["count"] = out["parts"].get("count", 0) - shift
        if last:
            out["complete"] = True
        sent.append((0, out))
    if parts is not None and last and not rows:
        sent.append((0, {"complete": True}))
    return sent
