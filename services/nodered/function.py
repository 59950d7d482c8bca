"""A Node-RED ``function`` node run in a QuickJS sandbox, one message per call.

Node-RED runs function bodies in a Node.js ``vm`` context; Fluxo runs them in QuickJS (the
``quickjs`` binding) so a body can run inside a service worker with no Node.js, with a CPU time
limit and a memory limit that a runaway or hostile body cannot lift. Each call gets a **fresh
context**: nothing a body does survives the call or leaks to another account's call.

The shim gives the body what Node-RED gives it, as far as one message in isolation allows:

* ``msg`` (a deep copy of the input), ``node`` (``id``, ``name``, ``outputCount``, ``log``,
  ``warn``, ``error``, ``debug``, ``trace``, ``status``, ``send``, ``done``), ``console``;
* ``context`` / ``flow`` / ``global`` with ``get``/``set``/``keys`` (callbacks accepted, several
  keys at once, keys as property paths like ``user.name`` as Node-RED's memory store reads
  them). The stores start from what the caller passes (empty by default); their final contents
  and the top-level keys the body set come back in :class:`FunctionResult`, and keeping them
  across messages is the caller's business (the step engine keeps them durably, see
  :mod:`nodered_semantics.context`). A value read is a copy: changing it in place without
  ``set`` changes nothing, where Node-RED's memory store would hand out the stored object;
* ``env.get`` (``NR_NODE_ID``, ``NR_NODE_NAME``, ``NR_FLOW_ID`` and the variables the caller
  passes; never the worker's own environment), ``RED.util.cloneMessage`` and ``generateId``;
* multiple outputs exactly as Node-RED's ``sendResults``: a message, an array with one entry per
  port, an array of messages per port, ``null`` for nothing;
* ``node.status(...)``: each status set comes back as the message a ``status`` node would send
  (:attr:`FunctionResult.statuses`), and the message as the body left it when it returned (when
  Node-RED calls ``done()``) as :attr:`FunctionResult.completed`, for a ``complete`` node;
* ``setTimeout`` runs its callbacks after the body, in delay order, without waiting; each
  message tells when its callback was due (``FunctionResult.delays_ms``), and the step engine
  sends it then, by a durable timer; ``setInterval`` would never end a call and is refused.

Refused with a clear error: ``require`` and external modules (``libs``): a worker has no
packages to give. ``initialize`` runs before the body (which waits for its promise, as on Node-RED) with its
sends dropped: on every call, unless the caller runs it once per deployment (the
``nodered-node`` service does when it uses context, see :mod:`services.nodered.service`);
``finalize`` runs at undeploy on Node-RED and is ignored.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import quickjs

from fluxo_core.errors import ConfigError, ServiceError

__all__ = [
    "DEFAULT_MEMORY_BYTES",
    "DEFAULT_TIME_S",
    "FunctionLimits",
    "FunctionResult",
    "FunctionSandbox",
    "log",
    "run_function",
]

DEFAULT_TIME_S = 1.0
DEFAULT_MEMORY_BYTES = 32 * 1024 * 1024
_STACK_BYTES = 512 * 1024
_MAX_PENDING_JOBS = 100_000
_MAX_TIMER_ROUNDS = 1_000
_MESSAGE_LIMIT = 300  # characters of a JavaScript error kept in a Fluxo error message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FunctionLimits:
    """What one call of a function body may use.

    Attributes:
        time_s: CPU time for the whole call (body, promise jobs and timer callbacks).
        memory_bytes: the QuickJS heap limit.
    """

    time_s: float = DEFAULT_TIME_S
    memory_bytes: int = DEFAULT_MEMORY_BYTES

    @property
    def wall_s(self) -> float:
        """The wall-clock limit :class:`FunctionSandbox` enforces by killing the child: the CPU
        limit plus as much again (at least half a second), the slack a child waiting for a CPU
        on a busy machine needs. QuickJS stops most code at ``time_s`` itself; this one catches
        what it does not interrupt (its regular-expression engine)."""
        return self.time_s + max(self.time_s, 0.5)


@dataclass
class FunctionResult:
    """What a body produced: ``(port, msg)`` pairs in send order, its logs, its context stores
    as it left them and the top-level keys of each it set (``touched``)."""

    outputs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    context: dict[str, dict[str, Any]] = field(default_factory=dict)
    touched: dict[str, list[str]] = field(default_factory=dict)
    # The statuses the body set (``node.status``), as a status node's message, in order.
    statuses: list[dict[str, Any]] = field(default_factory=list)
    # The message as the body left it when it returned (Node-RED's done() then), or None.
    completed: dict[str, Any] | None = None
    # When each output was sent, in ms after the call (a setTimeout callback's time; 0: by the
    # body): a caller that keeps time sends it then (the step engine does, durably).
    delays_ms: list[float] = field(default_factory=list)


_PRELUDE = r"""
var __outputs = [];
var __statuses = [];
var __completed = null;
var __logs = [];
var __failure = null;
var __settled = 0;
var __failed = 0;
var __timers = [];
var __timerSeq = 0;
var __now = 0;  // the time, in ms after the call started, of the timer callback running
var __ctx = JSON.parse(__context_json);
var __env = JSON.parse(__env_json);
var __nodeInfo = JSON.parse(__node_json);
function __text(args) {
  return Array.prototype.map.call(args, function (a) {
    if (typeof a === "string") { return a; }
    if (a instanceof Error) { return String(a); }
    try { return JSON.stringify(a); } catch (e) { return String(a); }
  }).join(" ");
}
function __clone(v) { return v === undefined ? undefined : JSON.parse(JSON.stringify(v)); }
var __touched = { node: {}, flow: {}, global: {} };
function __parts(key) {
  var text = String(key);
  var store = /^#:\((\S+?)\)::(.*)$/.exec(text);
  if (store) { text = store[2]; }
  var out = [];
  var re = /([^.\[\]]+)|\[(\d+)\]|\[(["'])(.*?)\3\]/g;
  var found;
  while ((found = re.exec(text)) !== null) {
    if (found[1] !== undefined) { out.push(found[1]); }
    else if (found[2] !== undefined) { out.push(Number(found[2])); }
    else { out.push(found[4]); }
  }
  if (out.length === 0) { throw new Error("Invalid context key: " + JSON.stringify(text)); }
  return out;
}
function __getPath(data, key) {
  var parts = __parts(key);
  var v = data;
  for (var i = 0; i < parts.length; i++) {
    if (v === null || v === undefined) { return undefined; }
    v = v[parts[i]];
  }
  return v;
}
function __setPath(kind, data, key, value) {
  var parts = __parts(key);
  var o = data;
  __touched[kind][String(parts[0])] = 1;
  for (var i = 0; i < parts.length - 1; i++) {
    if (o[parts[i]] === null || typeof o[parts[i]] !== "object") {
      if (value === undefined) { return; }
      o[parts[i]] = typeof parts[i + 1] === "number" ? [] : {};
    }
    o = o[parts[i]];
  }
  if (value === undefined) { delete o[parts[parts.length - 1]]; }
  else { o[parts[parts.length - 1]] = __clone(value); }
}
function __store(kind) {
  var data = __ctx[kind];
  function values(keys) {
    return Array.isArray(keys) ? keys.map(function (k) { return __clone(__getPath(data, k)); })
                               : __clone(__getPath(data, keys));
  }
  return {
    get: function (keys, store, cb) {
      if (typeof store === "function") { cb = store; }
      var v = values(keys);
      if (typeof cb === "function") {
        if (Array.isArray(v)) { cb.apply(null, [null].concat(v)); } else { cb(null, v); }
        return undefined;
      }
      return v;
    },
    set: function (keys, value, store, cb) {
      if (typeof store === "function") { cb = store; }
      var ks = Array.isArray(keys) ? keys : [keys];
      var vs = Array.isArray(keys) ? (Array.isArray(value) ? value : [value]) : [value];
      for (var i = 0; i < ks.length; i++) {
        // Node-RED's memory store sets the keys past the given values to null.
        __setPath(kind, data, ks[i], i < vs.length ? vs[i] : null);
      }
      if (typeof cb === "function") { cb(null); }
    },
    keys: function (store, cb) {
      if (typeof store === "function") { cb = store; }
      var k = Object.keys(data);
      if (typeof cb === "function") { cb(null, k); return undefined; }
      return k;
    }
  };
}
var context = __store("node");
var flow = __store("flow");
var global = __store("global");
Object.defineProperty(context, "flow", { value: flow });
Object.defineProperty(context, "global", { value: global });
var env = { get: function (name) { return __env[name]; } };
var RED = { util: {
  cloneMessage: __clone,
  generateId: function () {
    return (1 + Math.random() * 4294967295).toString(16).split(".")[0] +
           (1 + Math.random() * 4294967295).toString(16).split(".")[0];
  },
  getSetting: function (_node, name) { return __env[name]; }
} };
var console = {
  log: function () { __logs.push(["info", __text(arguments)]); },
  info: function () { __logs.push(["info", __text(arguments)]); },
  warn: function () { __logs.push(["warn", __text(arguments)]); },
  error: function () { __logs.push(["error", __text(arguments)]); },
  debug: function () { __logs.push(["debug", __text(arguments)]); }
};
function require(name) {
  throw new Error("require('" + name + "') is not available: the step engine runs function " +
                  "bodies without Node.js modules");
}
function setTimeout(fn, delay) {
  var args = Array.prototype.slice.call(arguments, 2);
  var id = ++__timerSeq;
  __timers.push({ id: id, at: __now + (Number(delay) || 0), fn: fn, args: args });
  return id;
}
function clearTimeout(id) { __timers = __timers.filter(function (t) { return t.id !== id; }); }
function setInterval() {
  throw new Error("setInterval is not supported on the step engine: a call must end; " +
                  "use an inject node with a repeat instead");
}
function clearInterval() {}
function __sendResults(msgs, cloneFirst) {
  if (msgs === null || msgs === undefined) { return; }
  if (!Array.isArray(msgs)) { msgs = [msgs]; }
  var count = 0;
  for (var m = 0; m < msgs.length; m++) {
    var port = msgs[m];
    if (!port) { continue; }
    if (!Array.isArray(port)) { port = [port]; }
    for (var n = 0; n < port.length; n++) {
      var one = port[n];
      if (one === null || one === undefined) { continue; }
      if (typeof one === "object" && !Array.isArray(one)) {
        if (count === 0 && cloneFirst !== false) { one = __clone(one); }
        one._msgid = __msgid;
        __outputs.push([m, JSON.stringify(one), __now]);
        count++;
      } else {
        __logs.push(["error", "Function tried to send a message of type " +
                     (Array.isArray(one) ? "Array" : typeof one)]);
      }
    }
  }
}
function __makeNode(sends) {
  return {
    id: __nodeInfo.id, name: __nodeInfo.name, path: __nodeInfo.path,
    outputCount: __nodeInfo.outputs,
    log: function () { __logs.push(["info", __text(arguments)]); },
    warn: function () { __logs.push(["warn", __text(arguments)]); },
    error: function (err, m) {
      __logs.push(["error", __text(arguments)]);
      // With a message, Node-RED hands a copy to the catch nodes (and the body goes on).
      if (m !== null && typeof m === "object" && !Array.isArray(m)) {
        __outputs.push([-1, JSON.stringify({ message: String(err), msg: m })]);
      }
    },
    debug: function () { __logs.push(["debug", __text(arguments)]); },
    trace: function () { __logs.push(["trace", __text(arguments)]); },
    status: function (status) {
      // Node.status, then Flow.handleStatus (which fails as there on undefined or null).
      switch (typeof status) {
        case "string": case "number": case "boolean": status = { text: "" + status };
      }
      if (status.hasOwnProperty("text") && typeof status.text !== "string") {
        try { status.text = status.text.toString(); } catch (e) {}
      }
      var out = { status: __clone(status) };
      if (status.hasOwnProperty("text")) { out.status.text = status.text.toString(); }
      out.status.source = { id: __nodeInfo.id, type: "function" };
      if (__nodeInfo.named) { out.status.source.name = __nodeInfo.name; }
      __statuses.push(JSON.stringify(out));
    },
    on: function (event) {
      if (event === "input") { throw new Error("node.on('input') is not allowed in a function"); }
    },
    send: function (msgs, cloneMsg) { if (sends) { __sendResults(msgs, cloneMsg); } },
    done: function (err) { if (err) { __fail(err); } }
  };
}
function __fail(err) { if (!__failed) { __failed = 1; __failure = err; } }
function __runTimers() {
  while (__timers.length > 0) {
    __timers.sort(function (a, b) { return a.at - b.at || a.id - b.id; });
    var t = __timers.shift();
    __now = Math.max(__now, t.at);
    try { t.fn.apply(null, t.args); } catch (e) { __fail(e); }
  }
}
function __describe(err) {
  if (err === null || err === undefined) { return "null"; }
  if (err instanceof Error) { return String(err); }
  if (typeof err === "string") { return err; }
  try { return JSON.stringify(err); } catch (e) { return String(err); }
}
"""


def run_function(
    node: Mapping[str, Any],
    msg: Mapping[str, Any],
    *,
    limits: FunctionLimits | None = None,
    env: Mapping[str, Any] | None = None,
    context: Mapping[str, Mapping[str, Any]] | None = None,
) -> FunctionResult:
    """Run the body of function node ``node`` on ``msg``.

    Args:
        node: the node's configuration as Node-RED stores it (``func``, ``outputs``, ...).
        msg: the message; it must be JSON (the sandbox gets a copy).
        limits: CPU time and memory for the call.
        env: variables ``env.get`` can read, besides the ``NR_*`` ones of the node.
        context: the starting contents of the ``node``/``flow``/``global`` stores.

    Raises:
        ServiceError: (not retryable: the same message fails the same way) the body threw or
            called ``done(err)``, used an unsupported feature, or ran out of time or memory;
            the message names the node and the fix.
    """
    limits = limits or FunctionLimits()
    nid = str(node.get("id", "?"))
    label = _label(node)
    libs = node.get("libs")
    if isinstance(libs, list) and libs:
        modules = ", ".join(str(lib.get("module", "?")) for lib in libs if isinstance(lib, Mapping))
        raise ServiceError(
            f"{label}: it loads external modules ({modules}), which the step engine cannot "
            "provide; run this flow on the nodered engine or inline what the module does",
            retryable=False,
            node=nid,
        )
    body = node.get("func")
    if not isinstance(body, str):
        raise ServiceError(f"{label}: it has no code (func)", retryable=False, node=nid)
    stores = {kind: dict((context or {}).get(kind) or {}) for kind in ("node", "flow", "global")}
    variables = {
        "NR_NODE_ID": nid,
        "NR_NODE_NAME": node.get("name") or "",
        "NR_NODE_PATH": f"{node.get('z') or ''}/{nid}",
        "NR_FLOW_ID": node.get("z") or "",
        **(env or {}),
    }
    info = {
        "id": nid,
        "name": node.get("name") or "",
        "path": f"{node.get('z') or ''}/{nid}",
        "outputs": node.get("outputs", 1),
        "named": "name" in node,  # the function node sets node.name = n.name
    }
    ctx = quickjs.Context()
    ctx.set_memory_limit(limits.memory_bytes)
    ctx.set_max_stack_size(_STACK_BYTES)
    ctx.set_time_limit(limits.time_s)
    ctx.set("__context_json", json.dumps(stores))
    ctx.set("__env_json", json.dumps(variables, default=str))
    ctx.set("__node_json", json.dumps(info, default=str))
    ctx.set("__msg_json", json.dumps(dict(msg)))
    setup = node.get("initialize")
    # As on Node-RED, the body runs once the setup code's promise resolved (a setup that
    # fails fails the call).
    script = (
        _PRELUDE
        + "var msg = JSON.parse(__msg_json);\nvar __msgid = msg._msgid;\n"
        + (
            "(async function () { var node = __makeNode(false);\n" + setup + "\n})()"
            if isinstance(setup, str) and setup.strip()
            else "Promise.resolve()"
        )
        + ".then(function () {\n"
        + "(async function (msg) { var node = __makeNode(true);\n"
        + body
        + "\n})(msg).then(function (r) { __settled = 1; __sendResults(r, false);"
        " __completed = JSON.stringify(msg); },"
        " function (e) { __settled = 1; __fail(e); });\n"
        + "}, function (e) { __settled = 1; __fail(e); });\n"
    )
    try:
        ctx.eval(script)
        _drain(ctx)
        for _ in range(_MAX_TIMER_ROUNDS):  # timers, then what they resolved, until none left
            if not ctx.eval("__timers.length"):
                break
            ctx.eval("__runTimers()")
            _drain(ctx)
        # Out of memory can strike again in the rejection handler; then nothing is recorded
        # but the body never settled, and the heap is at its limit.
        used = int(ctx.memory().get("memory_used_size", 0))
        if not ctx.get("__settled") or used >= limits.memory_bytes * 0.9:
            failure = (
                "InternalError: out of memory"
                if used >= limits.memory_bytes * 0.9
                else "Error: the code never finished (a promise that never resolves)"
            )
        elif ctx.get("__failed"):
            # QuickJS rejects with null when it runs out of memory (mapped in _js_error).
            failure = str(ctx.eval("__describe(__failure)"))
        else:
            failure = None
        # Node-RED hands its catch nodes the message object as the body left it.
        failed_msg = (
            json.loads(ctx.eval("JSON.stringify(msg) || 'null'")) if failure is not None else None
        )
        outputs = json.loads(ctx.eval("JSON.stringify(__outputs)"))
        logs = json.loads(ctx.eval("JSON.stringify(__logs)"))
        final = json.loads(ctx.eval("JSON.stringify(__ctx)"))
        touched = json.loads(ctx.eval("JSON.stringify(__touched)"))
        statuses = json.loads(ctx.eval("JSON.stringify(__statuses)"))
        completed = ctx.get("__completed")
    except quickjs.JSException as exc:
        raise _js_error(label, nid, str(exc), limits) from exc
    except quickjs.StackOverflow as exc:
        raise ServiceError(
            f"{label}: the code recursed too deeply (stack overflow); remove the unbounded "
            "recursion",
            retryable=False,
            node=nid,
        ) from exc
    for level, text in logs:
        log.log(_LEVELS.get(level, logging.INFO), "%s: %s", label, text)
    if failure is not None:
        error = _js_error(label, nid, str(failure), limits, failed_msg)
        if statuses and "nodered_message" in error.context:  # set before it failed: reported
            error.context["nodered_statuses"] = [json.loads(text) for text in statuses]
        raise error
    return FunctionResult(
        outputs=[(int(out[0]), json.loads(out[1])) for out in outputs],
        delays_ms=[float(out[2]) if len(out) > 2 else 0.0 for out in outputs],
        logs=[(str(level), str(text)) for level, text in logs],
        context=final,
        touched={scope: sorted(keys) for scope, keys in touched.items() if keys},
        statuses=[json.loads(text) for text in statuses],
        completed=json.loads(completed) if isinstance(completed, str) else None,
    )


_LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}


def _drain(ctx: quickjs.Context) -> None:
    """Run the promise jobs an ``async`` body queued (each one is under the time limit)."""
    for _ in range(_MAX_PENDING_JOBS):
        if not ctx.execute_pending_job():
            return
    raise quickjs.JSException("InternalError: interrupted (too many promise jobs)")


def _label(node: Mapping[str, Any]) -> str:
    name = node.get("name")
    shown = f" ({name})" if isinstance(name, str) and name else ""
    return f"function node {node.get('id', '?')!s}{shown}"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "error"
    return line[:_MESSAGE_LIMIT]


def _js_error(
    label: str, nid: str, text: str, limits: FunctionLimits, msg: Any = None
) -> ServiceError:
    """A JavaScript failure as a Fluxo error; the limits are told apart from the body's own."""
    if text.startswith("InternalError: interrupted"):
        return ServiceError(
            f"{label}: the code ran longer than its time limit of {limits.time_s:g} s of CPU; "
            "make it do less per message (or raise the limit of the nodered-node service)",
            retryable=False,
            node=nid,
            limit="time",
        )
    if text.startswith("InternalError: out of memory") or text.strip() in ("", "null"):
        return ServiceError(
            f"{label}: the code used more than its memory limit of "
            f"{limits.memory_bytes // (1024 * 1024)} MiB; make it keep less data",
            retryable=False,
            node=nid,
            limit="memory",
        )
    # nodered_message: what Node-RED puts in msg.error.message (the thrown value as text).
    return ServiceError(
        f"{label} failed: {_first_line(text)}",
        retryable=False,
        node=nid,
        nodered_message=_first_line(text),
        **({"nodered_msg": msg} if isinstance(msg, dict) else {}),
    )


class FunctionSandbox:
    """Runs function bodies in child processes that the parent stops by killing them.

    Why a child: the ``quickjs`` binding can segfault when a body exhausts its memory limit
    while building strings, and its time limit is not checked everywhere: the regular-expression
    engine of that QuickJS (``lre_exec``) never polls the interrupt handler, so
    ``/^(a+)+$/.test('a'.repeat(34) + 'b')`` runs for hours whatever the limit says. So the
    parent enforces a wall-clock limit of its own on every call (:attr:`FunctionLimits.wall_s`):
    a child that passes it is killed (SIGKILL) and reaped before the call fails, and the next call
    starts a fresh child. A child that died fails its call the same way (not retried: the same
    body would fail again). A child that answers is kept for the next call (each call still gets
    a fresh QuickJS context), so a call costs one round trip over a pipe.

    Args:
        processes: at most this many children, each running one body at a time; further
            concurrent callers wait for a free one.
    """

    def __init__(self, processes: int = 2) -> None:
        if processes < 1:
            raise ConfigError("FunctionSandbox needs at least one process", setting="processes")
        self.processes = processes
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(processes)
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._generation = 0  # bumped by close(): children of an older one are not reused

    def run(
        self,
        node: Mapping[str, Any],
        msg: Mapping[str, Any],
        *,
        limits: FunctionLimits | None = None,
        env: Mapping[str, Any] | None = None,
        context: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> FunctionResult:
        """:func:`run_function` in a child process; the same result and errors, and a time-limit
        error when the child does not answer within ``limits.wall_s``."""
        limits = limits or FunctionLimits()
        request = (dict(node), dict(msg), limits, dict(env or {}), _plain(context))
        nid = str(node.get("id", "?"))
        with self._slots:
            child = self._take()
            try:
                outcome = child.call(request, limits.wall_s)
            except _ChildTimeoutError:
                self._discard(child)
                raise ServiceError(
                    f"{_label(node)}: the code ran longer than its time limit of "
                    f"{limits.time_s:g} s and was stopped after {limits.wall_s:g} s (its sandbox "
                    "process was killed); make it do less per message (a regular expression with "
                    "nested repetition such as /(a+)+$/ can run for hours on a short input)",
                    retryable=False,
                    node=nid,
                    limit="time",
                ) from None
            except _ChildDiedError:
                self._discard(child)
                raise ServiceError(
                    f"{_label(node)}: the sandbox process running it died (QuickJS crashes this "
                    f"way when a body runs out of its {limits.memory_bytes // (1024 * 1024)} MiB "
                    "while building strings); make it keep less data",
                    retryable=False,
                    node=nid,
                    limit="memory",
                ) from None
            except BaseException:
                self._discard(child)  # interrupted mid-call: its answer would reach the next one
                raise
            self._release(child)
        status, message, details = outcome
        if status == "error":
            raise ServiceError(str(message), retryable=False, **details)
        return FunctionResult(**details)

    def pids(self) -> list[int]:
        """The process ids of the children alive now (idle or running a body)."""
        with self._lock:
            children = [*self._idle, *self._busy]
        return [child.pid for child in children if child.alive()]

    def close(self) -> None:
        """Kill the idle children now, and each busy one when its call returns."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for child in idle:
            child.kill()

    def _take(self) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    self._busy.add(child)
                    return child
                child.kill()  # died while idle (killed from outside): reap it, start another
            generation = self._generation
        child = _Child.start(generation)
        with self._lock:
            self._busy.add(child)
        return child

    def _release(self, child: _Child) -> None:
        with self._lock:
            self._busy.discard(child)
            if child.generation == self._generation:
                self._idle.append(child)
                return
        child.kill()

    def _discard(self, child: _Child) -> None:
        with self._lock:
            self._busy.discard(child)
        child.kill()


class _ChildTimeoutError(Exception):
    """The child did not answer in time (it is still running)."""


class _ChildDiedError(Exception):
    """The child exited or closed its pipe before answering."""


class _Child:
    """One sandbox process and the parent's end of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection, generation: int) -> None:
        self.process = process
        self.pid = process.pid or 0  # kept: a closed Process no longer tells it
        self.conn = conn
        self.generation = generation

    @classmethod
    def start(cls, generation: int) -> _Child:
        # forkserver: children are forked from a clean server process, not from a worker with
        # threads and an event loop; the server imports this module once, so a child starts
        # with QuickJS loaded.
        mp = multiprocessing.get_context("forkserver")
        mp.set_forkserver_preload([__name__])
        parent_end, child_end = mp.Pipe()
        process = mp.Process(
            target=_serve, args=(child_end,), name="fluxo-function-sandbox", daemon=True
        )
        process.start()
        child_end.close()  # the child holds its own copy; the parent sees EOF when it dies
        return cls(process, parent_end, generation)

    def alive(self) -> bool:
        return self.process.is_alive()

    def call(self, request: tuple[Any, ...], timeout_s: float) -> tuple[str, Any, dict[str, Any]]:
        try:
            self.conn.send(request)
            if not self.conn.poll(timeout_s):
                raise _ChildTimeoutError
            outcome: tuple[str, Any, dict[str, Any]] = self.conn.recv()
        except (EOFError, OSError):
            raise _ChildDiedError from None
        return outcome

    def kill(self) -> None:
        """SIGKILL the child and reap it, so that no process, zombie or pipe is left."""
        if self.process.exitcode is None:
            self.process.kill()
        self.process.join(timeout=10)
        if self.process.exitcode is None:  # pragma: no cover - SIGKILL cannot be ignored
            log.error("function sandbox process %s did not exit after SIGKILL", self.pid)
        else:
            self.process.close()
        self.conn.close()


def _serve(conn: Connection) -> None:
    """The child's loop: one request in, one outcome out, until the parent closes the pipe."""
    _die_with_parent()
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        try:
            outcome = _run_in_child(*request)
        except Exception as exc:  # a bug of the shim: report it rather than die silently
            outcome = ("error", f"the function sandbox failed: {exc!r}"[:_MESSAGE_LIMIT], {})
        conn.send(outcome)


def _die_with_parent() -> None:
    """Linux: be killed (SIGKILL) when the fork server, this child's parent, exits, as it does
    once the worker that started it is gone; else a child spinning in a regular expression
    would outlive a crash of the worker.

    The fork server exits when the last holder of its "alive" pipe closes it; every child it
    forks inherits that pipe (so that it could use the server too), which would keep the server,
    and so this child, alive forever. A sandbox child never starts processes: it closes it.
    """
    with contextlib.suppress(ImportError, AttributeError, OSError):
        from multiprocessing import forkserver

        server: Any = forkserver._forkserver  # private: the stubs do not describe its fields
        fd = getattr(server, "_forkserver_alive_fd", None)
        if isinstance(fd, int):
            server._forkserver_alive_fd = None
            os.close(fd)
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        parent = os.getppid()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)


_PR_SET_PDEATHSIG = 1


def _plain(context: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in (context or {}).items()}


def _run_in_child(
    node: dict[str, Any],
    msg: dict[str, Any],
    limits: FunctionLimits,
    env: dict[str, Any],
    context: dict[str, dict[str, Any]],
) -> tuple[str, Any, dict[str, Any]]:
    """In the child: run the body; errors come back as data (a ServiceError's keyword context
    would not survive pickling)."""
    try:
        result = run_function(node, msg, limits=limits, env=env, context=context)
    except ServiceError as exc:
        return ("error", exc.message, dict(exc.context))
    details = {"outputs": result.outputs, "logs": result.logs, "context": result.context}
    events = {"statuses": result.statuses, "completed": result.completed}
    extra = {"touched": result.touched, "delays_ms": result.delays_ms, **events}
    return ("ok", None, {**details, **extra})
