"""The JavaScript of the generated function nodes: job bookkeeping and service calls.

A job's state lives in the tab's flow context under ``fluxo_jobs[job_id]``: ``active`` counts the
messages in flight (the tokens of the step engine), ``results`` collects the job result. Fan-outs
add tokens before the copies leave, a message that ends removes its token, and the job is reported
``succeeded`` when none is left; an uncaught error reports it ``failed``. Without a job (a node
regenerated inside an imported flow) the same code calls the gateway with the payload alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "adjust_code",
    "cancel_code",
    "end_code",
    "failed_code",
    "fanout_code",
    "join_code",
    "key_code",
    "on_error_code",
    "record_code",
    "request_code",
    "result_code",
    "split_code",
    "start_code",
]


def _js(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


_JOB = """const fx = msg.fluxo || {};
const jobs = flow.get("fluxo_jobs") || {};
const job = fx.job_id ? jobs[fx.job_id] : undefined;
"""

_ADJUST = """function adjust(n) {
    if (job) { job.active += n; flow.set("fluxo_jobs", jobs); }
}
"""

_TOKEN = """function tokenOf() {
    // the first of the account's variable and FLUXO_TOKEN that is set
    return TOKEN_ENV.map((name) => env.get(name)).find(Boolean);
}
"""

_KEY = """function stepKey() {
    // This execution's key, by the step engine's rule (fluxo_core.ir.step_keys): the step id,
    // one [i] per fan-out level (fx.frames), and "<" + the key of the execution the message comes
    // from (fx.key) where several steps lead here; a goto's target always names the failed one.
    // Other steps inherit the origin of that execution (fx.origin: its key from its first "<"),
    // so the steps after a merging step keep its executions apart.
    const fx = msg.fluxo || (msg.fluxo = {});
    const via = fx.via;
    delete fx.via;
    let frames = fx.frames;
    if (!Array.isArray(frames)) {  // no bookkeeping (an imported flow): the split levels it is in
        frames = [];
        for (let p = msg.parts; p; p = p.parts) { frames.unshift(p.index); }
    } else if (via === "split" && msg.parts) {
        frames = frames.concat([msg.parts.index]);
        // the split's origin, for its join (fx.origins: one per level, as fx.frames)
        fx.origins = (fx.origins || []).concat([fx.origin || ""]);
    }
    fx.frames = frames;
    let key = STEP + frames.map((i) => "[" + i + "]").join("");
    if (via === "goto") {
        key = STEP + "<" + fx.key;
    } else if (MERGES && via !== "split" && fx.key !== undefined) {
        key += "<" + fx.key;
    } else {
        key += fx.origin || "";
    }
    fx.key = key;
    const at = key.indexOf("<");
    fx.origin = at < 0 ? "" : key.slice(at);
    return key;
}
"""

_REPORT = """function report(body) {
    const headers = {"content-type": "application/json"};
    const token = tokenOf();
    if (token) { headers.authorization = "Bearer " + token; }
    return {_msgid: msg._msgid, headers: headers, payload: Object.assign({
        job_id: fx.job_id, workflow: fx.workflow
    }, body)};
}
"""


def start_code(
    workflow_ref: str | None, start: str = "", entries: Sequence[str] = (), entry_header: str = ""
) -> str:
    """Entry: validate the posted job packet, register the job, answer 202, start the first step.

    ``entries``: the steps the start step leads to. A job whose ``entry_header`` names one of
    them starts there (output ``2 + its index``), the start step and the other entries do not
    run, as on the step engine; a job naming another step is refused (400) before it starts.
    """
    if not entries:
        route = "const port = 1;\n"
    else:
        route = f"""const START = {_js(start)};
const ENTRIES = {_js(list(entries))};
const entry = (packet.headers || {{}})[{_js(entry_header)}];
let port = 1;
if (entry !== undefined && entry !== START) {{
    port = 2 + ENTRIES.indexOf(entry);
    if (port < 2) {{
        answer.statusCode = 400;
        answer.payload = {{code: "invalid", message: "the job's " + {_js(entry_header)} +
            " header names " + JSON.stringify(entry) + ", which is not an entry of workflow " +
            (packet.workflow || WORKFLOW) + ": name one of the steps its start step " +
            JSON.stringify(START) + " leads to (" + ENTRIES.join(", ") + ")"}};
        return [answer];
    }}
}}
"""
    return f"""// The engine posts the job input packet: {{job_id, workflow, actor, payload, ...}}.
const WORKFLOW = {_js(workflow_ref)};  // name@version, when the workflow has a version
const packet = msg.payload;
const answer = {{_msgid: msg._msgid, res: msg.res, req: msg.req}};
if (!packet || typeof packet !== "object" || typeof packet.job_id !== "string") {{
    answer.statusCode = 400;
    answer.payload = {{code: "invalid", message: "post the job's input packet, with its job_id"}};
    return [answer, null];
}}
{route}const jobs = flow.get("fluxo_jobs") || {{}};
if (jobs[packet.job_id]) {{
    answer.statusCode = 200;
    answer.payload = {{job_id: packet.job_id, status: "running"}};
    return [answer, null];
}}
jobs[packet.job_id] = {{active: 1, results: []}};
flow.set("fluxo_jobs", jobs);
answer.statusCode = 202;
answer.payload = {{job_id: packet.job_id, status: "running"}};
const fluxo = {{
    job_id: packet.job_id,
    workflow: packet.workflow || WORKFLOW,
    trace_id: packet.trace_id,
    actor: packet.actor,
    headers: packet.headers || {{}}
}};
const out = [answer];
out[port] = {{_msgid: msg._msgid, fluxo: fluxo, payload: packet.payload}};
return out;
"""


MARK_LINE = re.compile(r'^const MARK = "([0-9a-f]*)";$', re.MULTILINE)


def cancel_code(mark: str = "") -> str:
    """Forget a job: its messages still in flight end without a report.

    Its answer carries ``mark``, the digest of the flow as deployed: after a redeploy of the tab,
    the engine knows the NEW flow answers (Node-RED answers the deploy before it has swapped the
    old flow's routes for the new ones).
    """
    return f"""const MARK = "{mark}";
const id = msg.payload && msg.payload.job_id;
const jobs = flow.get("fluxo_jobs") || {{}};
const known = typeof id === "string" && Boolean(jobs[id]);
if (known) {{ delete jobs[id]; flow.set("fluxo_jobs", jobs); }}
msg.statusCode = known ? 200 : 404;
msg.payload = {{job_id: id, status: known ? "cancelled" : "unknown", flow: MARK}};
return msg;
"""


def fanout_code(extra: int) -> str:
    """Before a message is copied to several steps: one more token per extra copy."""
    return f"{_JOB}{_ADJUST}adjust({extra});\nreturn msg;\n"


def key_code(step: str, *, merges: bool) -> str:
    """At the entry of a step that runs no function of its own (switch, transform, delay, native):
    its execution's key, which the steps after it extend (``merges``: a merging step)."""
    return f"""const STEP = {_js(step)};
const MERGES = {_js(merges)};
{_KEY}stepKey();
return msg;
"""


def adjust_code() -> str:
    """After a counting change node (a switch that may take several branches)."""
    return (
        f"{_JOB}{_ADJUST}"
        "adjust(Math.max(Number(msg.fluxo_matches) || 0, 1) - 1);\n"
        "delete msg.fluxo_matches;\nreturn msg;\n"
    )


def end_code(*, record: bool, token_env: list[str]) -> str:
    """A message ends: record it as a result (terminal steps), release its token, maybe report."""
    keep = "job.results.push(msg.payload);\n" if record else ""
    return f"""const TOKEN_ENV = {_js(token_env)};
{_JOB}{_TOKEN}{_REPORT}if (!job) {{ return null; }}
{keep}job.active -= 1;
if (job.active > 0) {{ flow.set("fluxo_jobs", jobs); return null; }}
delete jobs[fx.job_id];
flow.set("fluxo_jobs", jobs);
return report({{status: "succeeded", result: job.results}});
"""


def record_code() -> str:
    """The ``spec.output`` step produced a payload: it is (part of) the job result."""
    keep = 'if (job) { job.results.push(msg.payload); flow.set("fluxo_jobs", jobs); }\n'
    return f"{_JOB}{keep}return null;\n"


def failed_code(steps: dict[str, str], token_env: list[str]) -> str:
    """An uncaught error: the job failed; report the step and the error once."""
    return f"""const TOKEN_ENV = {_js(token_env)};
const STEPS = {_js(steps)};  // node id -> step id
{_JOB}{_TOKEN}{_REPORT}if (!job) {{ return null; }}
delete jobs[fx.job_id];
flow.set("fluxo_jobs", jobs);
const source = (msg.error && msg.error.source) || {{}};
const error = Object.assign({{
    step: STEPS[source.id] || null,
    key: STEPS[source.id] ? (fx.key || STEPS[source.id]) : null,
    code: "node_error",
    message: String((msg.error && msg.error.message) || "the flow failed")
}}, fx.error || {{}});
error.node = {{id: source.id, type: source.type, name: source.name}};
return report({{status: "failed", error: error}});
"""


_HASH = """function hash(text, seed) {
    let h1 = 0xdeadbeef ^ seed, h2 = 0x41c6ce57 ^ seed;
    for (let i = 0; i < text.length; i++) {
        const ch = text.charCodeAt(i);
        h1 = Math.imul(h1 ^ ch, 2654435761);
        h2 = Math.imul(h2 ^ ch, 1597334677);
    }
    h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
    h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
    return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(16).padStart(14, "0");
}
"""


def request_code(
    step: str,
    service: str,
    wait_s: float,
    token_env: list[str],
    step_headers: dict[str, str] | None = None,
    *,
    merges: bool = False,
) -> str:
    """Build the packet of a service call (the gateway's body) and its headers.

    ``step_headers``: packet headers the step adds to the job's (``fluxo-max-attempts``).
    ``merges``: several steps lead to this one (its key names where the message came from).
    The call's key (header ``fluxo-step-key``) is the step engine's (see ``stepKey``).
    """
    added = f"{_js(step_headers)}, " if step_headers else ""
    return f"""const STEP = {_js(step)};
const MERGES = {_js(merges)};
const TOKEN_ENV = {_js(token_env)};
const WAIT_S = {_js(wait_s)};
{_HASH}{_TOKEN}{_KEY}const fx = msg.fluxo || (msg.fluxo = {{}});
let call = fx.call;
if (!call || call.step !== STEP || !call.retrying) {{
    call = {{step: STEP, attempt: 1, input: msg.payload, key: stepKey()}};
}}
call.retrying = false;
fx.call = call;
const headers = Object.assign({{}}, fx.headers || {{}}, {added}{{"fluxo-step-key": call.key}});
const packet = {{payload: call.input, headers: headers}};
if (fx.job_id) {{
    const seed = fx.job_id + "/" + call.key + "/" + call.attempt;
    Object.assign(packet, {{
        id: "nr-" + hash(seed, 0) + hash(seed, 1),
        job_id: fx.job_id,
        step_id: STEP,
        workflow: fx.workflow,
        trace_id: fx.trace_id,
        actor: fx.actor
    }});
}}
msg.payload = packet;
msg.headers = {{"content-type": "application/json"}};
const token = tokenOf();
if (token) {{ msg.headers.authorization = "Bearer " + token; }}
msg.requestTimeout = (WAIT_S + 10) * 1000;
// call {service} through the Fluxo gateway: admission, billing and observation as on the step engine
return msg;
"""


def result_code(
    step: str,
    *,
    attempts: int,
    backoff: tuple[float, float, float],
    on_error: str,
    inside_join: bool,
    gathered: bool = False,
    with_node: str | None = None,
) -> str:
    """Read the gateway's call record: outputs on, a retry, the on_error route, or a failure.

    Outputs: 1 the next steps (one message per result packet), 2 the retry delay, 3 the
    ``on_error: goto`` step, 4 a call that returned no packet (its message ends). Between a split
    and its join a call must return one packet (as on the step engine): the join pairs items.
    ``gathered``: a join gathers this step's output packets: each leaves as one branch, with
    ``msg.parts`` as a split node sets them (so the join orders them), and none goes to output 4
    with an empty list for the join's gather function.
    ``with_node``: the change node setting the step's ``with``; its failure (an expression, an
    input that is not an object) is the step's, not retried, and no call was made.
    """
    base, factor, most = backoff
    with_check = ""
    if with_node is not None:
        with_check = f"""if (msg.error && status === undefined && msg.error.source &&
        msg.error.source.id === {_js(with_node)}) {{
    error = {{code: "invalid", message: "with: " + String(msg.error.message || msg.error),
             retryable: false}};
}} else """
    return f"""const STEP = {_js(step)};
const INSIDE_JOIN = {_js(inside_join)};
const GATHERED = {_js(gathered)};
const MAX_ATTEMPTS = {_js(attempts)};
const BACKOFF_S = {_js(base)}, FACTOR = {_js(factor)}, BACKOFF_MAX_S = {_js(most)};
const ON_ERROR = {_js(on_error)};
{_JOB}{_ADJUST}const call = fx.call || {{step: STEP, attempt: 1, input: undefined, key: STEP}};
function branch(p, j) {{
    // the output j of a 1 -> N step: one level more, from the execution `<key>~j`
    const copy = RED.util.cloneMessage(msg);
    copy.payload = p;
    copy.fluxo = Object.assign(copy.fluxo || {{}}, {{
        frames: (fx.frames || []).concat([j]), key: call.key + "~" + j,
        origins: (fx.origins || []).concat([fx.origin || ""])
    }});
    return copy;
}}
const record = msg.payload;
const status = msg.statusCode;
let error = null;
{with_check}if (msg.error && status === undefined) {{
    error = {{code: "unreachable", message: String(msg.error.message || msg.error)}};
}} else if (status === 200 && record && record.status === "succeeded") {{
    error = null;
}} else if (status === 202) {{
    error = {{code: "service_timeout", message: "the call did not finish in time", retryable: true}};
}} else if (record && typeof record === "object" && record.error) {{
    error = record.error;
}} else if (record && typeof record === "object" && record.code) {{
    error = record;
}} else {{
    error = {{code: "call_failed", message: "the gateway answered HTTP " + status}};
}}
for (const key of ["error", "statusCode", "headers", "responseUrl", "redirectList", "retry",
                   "responseCookies", "requestTimeout"]) {{
    delete msg[key];
}}
if (!error) {{
    delete fx.call;
    const outputs = (record.result || []).map((p) => p.payload);
    if (GATHERED) {{
        if (outputs.length === 0) {{
            fx.unbranched = true;  // the join fires at once, with [], around this step's level
            msg.payload = [];
            return [null, null, null, msg];
        }}
        adjust(outputs.length - 1);
        const id = msg._msgid + ":" + call.key;
        return [outputs.map((p, j) => {{
            const copy = branch(p, j);
            copy.parts = {{id: id, index: j, count: outputs.length, type: "array", len: 1}};
            if (msg.parts) {{ copy.parts.parts = msg.parts; }}
            return copy;
        }}), null, null, null];
    }}
    if (outputs.length === 1) {{ msg.payload = outputs[0]; return [msg, null, null, null]; }}
    if (outputs.length === 0) {{ msg.payload = call.input; return [null, null, null, msg]; }}
    if (!INSIDE_JOIN) {{
        adjust(outputs.length - 1);
        return [outputs.map(branch), null, null, null];
    }}
    error = {{
        code: "invalid",
        message: "the call returned " + outputs.length + " packets between a split and its " +
            "join, which pairs one packet per item; join right after the steps of each branch"
    }};
}}
// a refused call (401/403: blocked, over quota, job cancelled) is not retried
const refused = status === 401 || status === 403 || error.code === "invalid";
if (call.attempt < MAX_ATTEMPTS && !refused) {{
    call.attempt += 1;
    call.retrying = true;
    const wait = BACKOFF_S * Math.pow(FACTOR, Math.max(call.attempt - 2, 0));
    msg.delay = Math.round(1000 * Math.min(wait, BACKOFF_MAX_S));
    msg.payload = call.input;
    return [null, msg, null, null];
}}
delete fx.call;
if (ON_ERROR === "continue") {{ msg.payload = call.input; return [msg, null, null, null]; }}
if (ON_ERROR === "goto") {{
    msg.payload = {{error: error, input: call.input, step: STEP}};
    if (msg.fluxo) {{ msg.fluxo.via = "goto"; msg.fluxo.key = call.key; }}
    return [null, null, msg, null];
}}
msg.payload = call.input;
fx.error = Object.assign({{step: STEP, key: call.key}}, error);
node.error(STEP + ": " + (error.message || error.code || "the call failed"), msg);
return null;
"""


def on_error_code(step: str, on_error: str) -> str:
    """A step's node failed and the step says continue or goto: route its input on."""
    return f"""const STEP = {_js(step)};
const ON_ERROR = {_js(on_error)};
const fx = msg.fluxo || {{}};
const input = fx.input !== undefined ? fx.input : msg.payload;
const error = {{code: "step_failed", message: String((msg.error && msg.error.message) || "failed")}};
delete msg.error;
delete fx.input;
if (ON_ERROR === "goto" && msg.fluxo) {{ msg.fluxo.via = "goto"; }}  // fx.key: the failed one
msg.payload = ON_ERROR === "goto" ? {{error: error, input: input, step: STEP}} : input;
return msg;
"""


def split_code(step: str, keys: list[Any], *, merges: bool = False) -> str:
    """Before a split: the items of the array, one token per item (output 2: no items).

    Each item's message is marked ``via: "split"``: the step it reaches adds the item's level
    to the key and names no predecessor (as on the step engine)."""
    return f"""const STEP = {_js(step)};
const MERGES = {_js(merges)};
const PATH = {_js(keys)};
{_KEY}stepKey();
{_JOB}{_ADJUST}let items = msg.payload;
for (const key of PATH) {{
    items = items !== null && typeof items === "object" ? items[key] : undefined;
}}
if (!Array.isArray(items)) {{
    node.error("split " + STEP + " needs an array at " + (PATH.join(".") || "the payload"), msg);
    return null;
}}
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
items = items.map((item) => isObject(item) ? item : {{value: item}});
msg.payload = items;
if (items.length === 0) {{
    fx.unbranched = true;  // the join fires at once, with [], around the split's level
    return [null, msg];
}}
adjust(items.length - 1);
fx.via = "split";
return [msg, null];
"""


def join_code(step: str = "") -> str:
    """After a join: one token for the gathered branches; branch arrays are concatenated.

    The join's key is its id with the levels around its split (one level less than the
    branches', none less when the split had no item) and the origin of the split's execution
    (kept per level in ``fluxo.origins``, as the step engine keeps it in its frames)."""
    return f"""const STEP = {_js(step)};
{_JOB}{_ADJUST}if (msg.fluxo) {{
    // no level to leave: the split had no item, or its items came here without a step
    const kept = msg.fluxo.unbranched || msg.fluxo.via === "split";
    const frames = msg.fluxo.frames || [];
    const origins = msg.fluxo.origins || [];
    msg.fluxo.frames = kept ? frames : frames.slice(0, -1);
    if (!kept) {{  // the origin of the split's execution, kept at its level
        msg.fluxo.origin = origins.length ? origins[origins.length - 1] : "";
        msg.fluxo.origins = origins.slice(0, -1);
    }}
    delete msg.fluxo.unbranched;
    delete msg.fluxo.via;
    msg.fluxo.key = STEP + msg.fluxo.frames.map((i) => "[" + i + "]").join("") +
        (msg.fluxo.origin || "");
}}
const branches = Array.isArray(msg.payload) ? msg.payload : [msg.payload];
if (branches.length > 1) {{ adjust(1 - branches.length); }}
msg.payload = [].concat(...branches.map((b) => Array.isArray(b) ? b : [b]));
return msg;
"""
