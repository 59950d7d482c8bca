"""The Node-RED translator: generated flows (goldens), import mapping, fidelity, lossless round trips.

Goldens live in ``tests/golden/nodered``; ``FLUXO_REGENERATE=1`` rewrites them.
"""

from __future__ import annotations

import copy
import gc
import json
import re
from pathlib import Path
from typing import Any

import jsonata
import pytest

from engines.step.conditions import evaluate
from fluxo_core.errors import MalformedRequestError, ValidationError
from fluxo_core.ir import (
    NativeStep,
    ServiceStep,
    SwitchStep,
    TransformStep,
    Workflow,
    load_workflows_yaml,
    validate_workflow,
)
from fluxo_core.ir.transform import Parameters, Transform
from tests.support.golden import regenerate_requested
from translators._nodered_expr import change_rules, condition_jsonata, with_jsonata
from translators.nodered import (
    NodeRedOptions,
    check_flow,
    flow_key,
    from_nodered,
    to_nodered,
    to_nodered_flows,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "nodered"
EXAMPLES = ["order-intake", "lead-enrichment", "invoice-reminder"]
REGENERATE = regenerate_requested()


def example(name: str) -> Workflow:
    return load_workflows_yaml((ROOT / "examples" / f"{name}.yaml").read_text())[0]


def applied(workflow: Workflow, account: str = "acme", version: str = "3") -> Workflow:
    """The workflow as the control plane stores and deploys it: account and version set."""
    metadata = workflow.metadata.model_copy(update={"account": account, "version": version})
    return workflow.model_copy(update={"metadata": metadata})


def by_id(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in nodes}


def workflow(steps: list[dict[str, Any]], **spec: Any) -> Workflow:
    return validate_workflow(
        {
            "apiVersion": "fluxo.dev/v1",
            "kind": "Workflow",
            "metadata": {"name": "wf"},
            "spec": {"steps": steps, **spec},
        }
    )


# --- representative flows ------------------------------------------------------------------------


def _debug(nid: str, z: str, x: int, y: int) -> dict[str, Any]:
    return {
        "id": nid,
        "type": "debug",
        "z": z,
        "name": "",
        "active": True,
        "tosidebar": True,
        "console": False,
        "tostatus": False,
        "complete": "payload",
        "targetType": "msg",
        "statusVal": "",
        "statusType": "auto",
        "x": x,
        "y": y,
        "wires": [],
    }


TAB_FLOW: list[dict[str, Any]] = [
    {
        "id": "t1",
        "type": "tab",
        "label": "Orders",
        "disabled": False,
        "info": "Route orders",
        "env": [],
    },
    {
        "id": "in1",
        "type": "inject",
        "z": "t1",
        "name": "every 5 min",
        "props": [{"p": "payload"}],
        "repeat": "",
        "crontab": "*/5 * * * *",
        "once": False,
        "onceDelay": 0.1,
        "topic": "",
        "payload": '{"total": "5", "cust": {"tier": "gold"}}',
        "payloadType": "json",
        "x": 120,
        "y": 80,
        "wires": [["ch1"]],
    },
    {
        "id": "ch1",
        "type": "change",
        "z": "t1",
        "name": "Prepare",
        "rules": [
            {
                "t": "set",
                "p": "payload",
                "pt": "msg",
                "to": '{"total": $number(payload.total) * 2, "customer": payload.cust, "tmp": 1}',
                "tot": "jsonata",
            },
            {"t": "set", "p": "payload.status", "pt": "msg", "to": "new", "tot": "str"},
            {"t": "set", "p": "payload.seen", "pt": "msg", "to": "[payload.tmp]", "tot": "jsonata"},
            {"t": "delete", "p": "payload.tmp", "pt": "msg"},
        ],
        "action": "",
        "property": "",
        "from": "",
        "to": "",
        "reg": False,
        "x": 300,
        "y": 80,
        "wires": [["sw1"]],
    },
    {
        "id": "sw1",
        "type": "switch",
        "z": "t1",
        "name": "By size",
        "property": "payload.total",
        "propertyType": "msg",
        "rules": [
            {"t": "gte", "v": "1000", "vt": "num"},
            {"t": "jsonata_exp", "v": "payload.customer.tier = 'gold'", "vt": "jsonata"},
            {"t": "else"},
        ],
        "checkall": "false",
        "repair": False,
        "outputs": 3,
        "x": 480,
        "y": 80,
        "wires": [["fn1"], ["hr1"], ["dbg1"]],
    },
    {
        "id": "fn1",
        "type": "function",
        "z": "t1",
        "name": "Review",
        "func": "msg.payload.review = true;\nreturn msg;",
        "outputs": 1,
        "timeout": 0,
        "noerr": 0,
        "initialize": "",
        "finalize": "",
        "libs": [],
        "x": 660,
        "y": 40,
        "wires": [["dbg1"]],
    },
    {
        "id": "hr1",
        "type": "http request",
        "z": "t1",
        "name": "Notify",
        "method": "POST",
        "ret": "obj",
        "paytoqs": "ignore",
        "url": "https://hooks.example.com/orders",
        "tls": "",
        "persist": False,
        "proxy": "",
        "insecureHTTPParser": False,
        "authType": "",
        "senderr": False,
        "headers": [],
        "x": 660,
        "y": 100,
        "wires": [["dbg1"]],
    },
    _debug("dbg1", "t1", 850, 80),
    {
        "id": "c1",
        "type": "comment",
        "z": "t1",
        "name": "Orders come in here",
        "info": "",
        "x": 140,
        "y": 40,
        "wires": [],
    },
]

# An old-format export: no tab node, every node names the same missing tab in z.
OLD_FLOW: list[dict[str, Any]] = [
    {
        "id": "a1.b2",
        "type": "inject",
        "z": "f00.d",
        "name": "",
        "topic": "",
        "payload": '{"items": [{"n": 1}, {"n": 2}]}',
        "payloadType": "json",
        "repeat": "60",
        "crontab": "",
        "once": True,
        "onceDelay": 0.1,
        "x": 100,
        "y": 60,
        "wires": [["a2.b3"]],
    },
    {
        "id": "a2.b3",
        "type": "change",
        "z": "f00.d",
        "name": "",
        "rules": [{"t": "set", "p": "payload", "pt": "msg", "to": "payload.items", "tot": "msg"}],
        "x": 260,
        "y": 60,
        "wires": [["a3.b4"]],
    },
    {
        "id": "a3.b4",
        "type": "split",
        "z": "f00.d",
        "name": "",
        "splt": "\\n",
        "spltType": "str",
        "arraySplt": 1,
        "arraySpltType": "len",
        "stream": False,
        "addname": "",
        "x": 400,
        "y": 60,
        "wires": [["a4.b5"]],
    },
    {
        "id": "a4.b5",
        "type": "delay",
        "z": "f00.d",
        "name": "",
        "pauseType": "delay",
        "timeout": "500",
        "timeoutUnits": "milliseconds",
        "rate": "1",
        "nbRateUnits": "1",
        "rateUnits": "second",
        "randomFirst": "1",
        "randomLast": "5",
        "randomUnits": "seconds",
        "drop": False,
        "x": 540,
        "y": 60,
        "wires": [["a5.b6"]],
    },
    {
        "id": "a5.b6",
        "type": "join",
        "z": "f00.d",
        "name": "",
        "mode": "auto",
        "build": "string",
        "property": "payload",
        "propertyType": "msg",
        "key": "topic",
        "joiner": "\\n",
        "joinerType": "str",
        "accumulate": False,
        "timeout": "",
        "count": "",
        "x": 680,
        "y": 60,
        "wires": [["a6.b7"]],
    },
    _debug("a6.b7", "f00.d", 820, 60),
]

SUBFLOW_FLOW: list[dict[str, Any]] = [
    {
        "id": "sf1",
        "type": "subflow",
        "name": "Add tax",
        "info": "Adds VAT",
        "category": "",
        "in": [{"x": 60, "y": 80, "wires": [{"id": "sfc"}]}],
        "out": [{"x": 420, "y": 80, "wires": [{"id": "sfc", "port": 0}]}],
        "env": [],
        "meta": {},
        "color": "#DDAA99",
    },
    {
        "id": "sfc",
        "type": "change",
        "z": "sf1",
        "name": "Tax",
        "rules": [
            {
                "t": "set",
                "p": "payload",
                "pt": "msg",
                "to": '{"net": payload.net, "tax": payload.net * 0.2}',
                "tot": "jsonata",
            }
        ],
        "x": 240,
        "y": 80,
        "wires": [[]],
    },
    {"id": "t2", "type": "tab", "label": "Billing", "disabled": False, "info": "", "env": []},
    {
        "id": "hi",
        "type": "http in",
        "z": "t2",
        "name": "",
        "url": "/bill",
        "method": "post",
        "upload": False,
        "swaggerDoc": "",
        "x": 100,
        "y": 100,
        "wires": [["inst"]],
    },
    {
        "id": "inst",
        "type": "subflow:sf1",
        "z": "t2",
        "name": "",
        "x": 260,
        "y": 100,
        "wires": [["ho"]],
    },
    {
        "id": "ho",
        "type": "http response",
        "z": "t2",
        "name": "",
        "statusCode": "",
        "headers": {},
        "x": 400,
        "y": 100,
        "wires": [],
    },
]

GROUP_FLOW: list[dict[str, Any]] = [
    {"id": "t3", "type": "tab", "label": "Grouped", "disabled": False, "info": "", "env": []},
    {
        "id": "grp",
        "type": "group",
        "z": "t3",
        "name": "Stage 1",
        "style": {"label": True},
        "nodes": ["g-in", "g-tpl"],
        "x": 34,
        "y": 39,
        "w": 352,
        "h": 82,
    },
    {
        "id": "g-in",
        "type": "inject",
        "z": "t3",
        "g": "grp",
        "name": "go",
        "props": [{"p": "payload"}],
        "repeat": "",
        "crontab": "",
        "once": False,
        "onceDelay": 0.1,
        "topic": "",
        "payload": "{}",
        "payloadType": "json",
        "x": 130,
        "y": 80,
        "wires": [["g-tpl"]],
    },
    {
        "id": "g-tpl",
        "type": "template",
        "z": "t3",
        "g": "grp",
        "name": "Greet",
        "field": "payload.greeting",
        "fieldType": "msg",
        "format": "handlebars",
        "syntax": "mustache",
        "template": "Hello {{{payload.name}}} & {{payload.title}}!",
        "output": "str",
        "x": 290,
        "y": 80,
        "wires": [["g-dbg"]],
    },
    _debug("g-dbg", "t3", 480, 80),
]

LINK_FLOW: list[dict[str, Any]] = [
    {"id": "t4", "type": "tab", "label": "Links A", "disabled": False, "info": "", "env": []},
    {"id": "t5", "type": "tab", "label": "Links B", "disabled": False, "info": "", "env": []},
    {
        "id": "l-in",
        "type": "inject",
        "z": "t4",
        "name": "",
        "props": [{"p": "payload"}],
        "repeat": "",
        "crontab": "",
        "once": False,
        "onceDelay": 0.1,
        "topic": "",
        "payload": "",
        "payloadType": "date",
        "x": 100,
        "y": 60,
        "wires": [["l-out"]],
    },
    {
        "id": "l-out",
        "type": "link out",
        "z": "t4",
        "name": "to stamp",
        "mode": "link",
        "links": ["l-target"],
        "x": 215,
        "y": 60,
        "wires": [],
    },
    {
        "id": "l-target",
        "type": "link in",
        "z": "t4",
        "name": "stamp",
        "links": ["l-out"],
        "x": 115,
        "y": 140,
        "wires": [["j1"]],
    },
    {"id": "j1", "type": "junction", "z": "t4", "x": 200, "y": 140, "wires": [["l-set", "l-far"]]},
    {
        "id": "l-set",
        "type": "change",
        "z": "t4",
        "name": "stamp",
        "rules": [{"t": "set", "p": "payload.at", "pt": "msg", "to": "", "tot": "date"}],
        "x": 300,
        "y": 140,
        "wires": [[]],
    },
    {
        "id": "l-far",
        "type": "link out",
        "z": "t4",
        "name": "to B",
        "mode": "link",
        "links": ["b-in"],
        "x": 300,
        "y": 200,
        "wires": [],
    },
    {
        "id": "b-in",
        "type": "link in",
        "z": "t5",
        "name": "from A",
        "links": ["l-far"],
        "x": 100,
        "y": 60,
        "wires": [["b-fn"]],
    },
    {
        "id": "b-fn",
        "type": "function",
        "z": "t5",
        "name": "B",
        "func": "return msg;",
        "outputs": 1,
        "timeout": 0,
        "noerr": 0,
        "initialize": "",
        "finalize": "",
        "libs": [],
        "x": 260,
        "y": 60,
        "wires": [[]],
    },
]

CONFIG_FLOW: list[dict[str, Any]] = [
    {"id": "t6", "type": "tab", "label": "Sensors", "disabled": False, "info": "", "env": []},
    {
        "id": "mq-in",
        "type": "mqtt in",
        "z": "t6",
        "name": "",
        "topic": "sensors/#",
        "qos": "2",
        "datatype": "json",
        "broker": "broker1",
        "nl": False,
        "rap": True,
        "rh": 0,
        "inputs": 0,
        "x": 120,
        "y": 80,
        "wires": [["sw-t"]],
    },
    {
        "id": "sw-t",
        "type": "switch",
        "z": "t6",
        "name": "hot?",
        "property": "payload.temp",
        "propertyType": "msg",
        "rules": [{"t": "btwn", "v": "40", "vt": "num", "v2": "30", "v2t": "num"}, {"t": "nnull"}],
        "checkall": "true",
        "repair": False,
        "outputs": 2,
        "x": 300,
        "y": 80,
        "wires": [["mq-out"], ["mq-out"]],
    },
    {
        "id": "mq-out",
        "type": "mqtt out",
        "z": "t6",
        "name": "",
        "topic": "alerts",
        "qos": "",
        "retain": "",
        "broker": "broker1",
        "x": 480,
        "y": 80,
        "wires": [],
    },
    {
        "id": "broker1",
        "type": "mqtt-broker",
        "name": "local",
        "broker": "localhost",
        "port": "1883",
        "tls": "tls1",
        "clientid": "",
        "usetls": True,
        "protocolVersion": "4",
        "keepalive": "60",
        "cleansession": True,
    },
    {
        "id": "tls1",
        "type": "tls-config",
        "name": "",
        "cert": "",
        "key": "",
        "ca": "",
        "verifyservercert": True,
    },
    {"id": "unused-cfg", "type": "ui_base", "theme": {}},
]

LOOP_FLOW: list[dict[str, Any]] = [
    {"id": "t7", "type": "tab", "label": "Retry loop", "disabled": False, "info": "", "env": []},
    {
        "id": "lp-fn",
        "type": "function",
        "z": "t7",
        "name": "try",
        "func": "return [msg, null];",
        "outputs": 2,
        "timeout": 0,
        "noerr": 0,
        "initialize": "",
        "finalize": "",
        "libs": [],
        "x": 200,
        "y": 80,
        "wires": [["lp-wait"], ["lp-done"]],
    },
    {
        "id": "lp-wait",
        "type": "delay",
        "z": "t7",
        "name": "",
        "pauseType": "delay",
        "timeout": "2",
        "timeoutUnits": "seconds",
        "x": 360,
        "y": 40,
        "wires": [["lp-fn"]],
    },
    {
        "id": "lp-done",
        "type": "change",
        "z": "t7",
        "name": "",
        "rules": [{"t": "set", "p": "topic", "pt": "msg", "to": "done", "tot": "str"}],
        "x": 360,
        "y": 120,
        "wires": [[]],
    },
    {
        "id": "lp-d",
        "type": "delay",
        "z": "t7",
        "name": "",
        "d": True,
        "pauseType": "delay",
        "timeout": "2",
        "timeoutUnits": "seconds",
        "x": 360,
        "y": 200,
        "wires": [[]],
    },
]

REPRESENTATIVE = {
    "tab": TAB_FLOW,
    "old-format": OLD_FLOW,
    "subflow": SUBFLOW_FLOW,
    "group": GROUP_FLOW,
    "links": LINK_FLOW,
    "config": CONFIG_FLOW,
    "loop": LOOP_FLOW,
    "all-in-one": TAB_FLOW + SUBFLOW_FLOW + GROUP_FLOW + LINK_FLOW + CONFIG_FLOW + LOOP_FLOW,
}


# --- generated flows -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_generated_flow_matches_golden(name: str) -> None:
    flow = to_nodered(applied(example(name)))  # what the engine deploys for account acme
    path = GOLDEN / f"{name}.json"
    text = json.dumps(flow, indent=2, ensure_ascii=False) + "\n"
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with FLUXO_REGENERATE=1"
    assert path.read_text() == text


@pytest.mark.parametrize("name", EXAMPLES)
def test_generated_flow_is_deployable(name: str) -> None:
    flow = to_nodered(example(name))
    assert check_flow(flow) == []
    tabs = [n for n in flow if n["type"] == "tab"]
    assert len(tabs) == 1
    assert all(n.get("z") == tabs[0]["id"] for n in flow if n is not tabs[0])


def test_generated_ids_are_stable_and_follow_steps() -> None:
    wf = example("order-intake")
    first, again = to_nodered(wf), to_nodered(wf)
    assert first == again
    # another step's edit leaves the ids of the other steps' nodes alone
    data = wf.model_dump(by_alias=True, exclude_defaults=True)
    data["spec"]["steps"][2]["name"] = "renamed"
    edited = to_nodered(validate_workflow(data))
    assert {n["id"] for n in first} == {n["id"] for n in edited}
    versioned = to_nodered(
        validate_workflow({**data, "metadata": {**data["metadata"], "version": "7"}})
    )
    assert not {n["id"] for n in first} & {n["id"] for n in versioned}


def test_generated_entry_service_calls_and_reports() -> None:
    options = NodeRedOptions(fluxo_url="http://fluxo:9000/", call_wait_s=12)
    flow = to_nodered(example("order-intake"), options=options)
    entry = [n for n in flow if n["type"] == "http in" and not n["url"].endswith("/cancel")]
    assert [(n["url"], n["method"]) for n in entry] == [("/fluxo/jobs/order-intake", "post")]
    calls = [n["url"] for n in flow if n["type"] == "http request" and "/v1/services/" in n["url"]]
    assert calls == [
        "http://fluxo:9000/v1/services/parse-order@1/calls?wait=10",
        "http://fluxo:9000/v1/services/enrich-customer@1/calls?wait=10",
        "http://fluxo:9000/v1/services/notify-log@1/calls?wait=10",
    ]
    reports = [
        n for n in flow if n["type"] == "http request" and n["url"].endswith("/engine-events")
    ]
    assert [n["url"] for n in reports] == ["http://fluxo:9000/v1/engine-events"]
    # the token comes from the environment, never from the flow
    assert "FLUXO_TOKEN" in json.dumps(flow)
    # an uncaught catch reports failures and comes after every step-scoped catch
    catches = [n for n in flow if n["type"] == "catch"]
    assert catches[-1]["scope"] is None
    assert catches[-1]["uncaught"] is True
    assert all(c["scope"] for c in catches[:-1])
    # switch -> switch with JSONata rules and an otherwise, transform -> change (JSONata)
    switch = next(n for n in flow if n["type"] == "switch")
    assert [r["t"] for r in switch["rules"]] == ["jsonata_exp", "jsonata_exp", "else"]
    changes = [n for n in flow if n["type"] == "change"]
    assert all(r["tot"] == "jsonata" for n in changes for r in n["rules"])


def test_a_workflow_of_an_account_sends_that_accounts_token_first() -> None:
    steps = [{"id": "a", "kind": "service", "service": "noop"}]
    plain = workflow(steps)
    owned = plain.model_copy(
        update={"metadata": plain.metadata.model_copy(update={"account": "acme-corp.eu"})}
    )
    senders = [
        n["func"]
        for n in to_nodered(owned)
        if n["type"] == "function" and "Bearer" in n.get("func", "")
    ]
    assert len(senders) == 4  # the service call, both branch ends, the failure report
    expected = 'const TOKEN_ENV = ["FLUXO_TOKEN_ACME_CORP_EU", "FLUXO_TOKEN"];'
    assert all(expected in func for func in senders)
    unowned = [n["func"] for n in to_nodered(plain) if "Bearer" in n.get("func", "")]
    assert all('const TOKEN_ENV = ["FLUXO_TOKEN"];' in func for func in unowned)


def test_two_accounts_workflows_of_one_name_share_no_node_and_no_route() -> None:
    acme, globex = (to_nodered(applied(example("order-intake"), a)) for a in ("acme", "globex"))
    assert not {n["id"] for n in acme} & {n["id"] for n in globex}
    assert check_flow(acme + globex) == []  # one Node-RED holds both tabs
    routes = {
        account: sorted(n["url"] for n in flow if n["type"] == "http in")
        for account, flow in (("acme", acme), ("globex", globex))
    }
    assert routes == {
        account: [
            f"/fluxo/jobs/{account}/order-intake/3",
            f"/fluxo/jobs/{account}/order-intake/3/cancel",
        ]
        for account in ("acme", "globex")
    }
    assert [n["label"] for n in acme if n["type"] == "tab"] == ["acme/order-intake@3"]
    # the ids derive from the account and the ref, so a redeploy finds its own nodes again
    assert {n["id"] for n in acme} == {
        n["id"] for n in to_nodered(applied(example("order-intake"), "acme"))
    }
    assert flow_key("acme", "order-intake@3") == "acme/order-intake@3"


# Node-RED routes like Express: case-insensitive, ':' starts a parameter, '/' a segment.
ACCOUNTS = ["acme", "Acme", "ACME", "acme-corp", "acme.corp", "acme:corp", "acme/corp", "a--b"]


def test_each_account_gets_one_route_segment_of_its_own() -> None:
    options = NodeRedOptions()
    segments = []
    for account in [*ACCOUNTS, "x" * 128, "x" * 127 + "y"]:
        path = options.entry_path(account, "orders@2")
        segment, _, rest = path.removeprefix("/fluxo/jobs/").partition("/")
        assert rest == "orders/2", path
        assert len(segment) <= 40, path
        assert re.fullmatch(r"[a-z0-9-]+", segment), path
        segments.append(segment)
    assert len(set(segments)) == len(segments)  # never two accounts on one route
    assert options.entry_path("acme", "orders@2") == "/fluxo/jobs/acme/orders/2"
    assert options.entry_path(None, "orders@2") == "/fluxo/jobs/orders/2"
    assert options.entry_path("acme", "orders") == "/fluxo/jobs/acme/orders"


def test_generated_split_join_delay_and_fan_out() -> None:
    wf = workflow(
        [
            {"id": "each", "kind": "split", "path": "items", "next": ["a", "b"]},
            {"id": "a", "kind": "delay", "seconds": 1.5, "next": ["gather"]},
            {"id": "b", "kind": "service", "service": "noop", "next": ["gather"]},
            {"id": "gather", "kind": "join", "split": "each"},
        ]
    )
    flow = to_nodered(wf)
    assert check_flow(flow) == []
    types = [n["type"] for n in flow]
    assert types.count("split") == 1
    assert types.count("join") == 1
    delay = next(n for n in flow if n["type"] == "delay" and n["pauseType"] == "delay")
    assert delay["timeout"] == "1.5"
    assert delay["timeoutUnits"] == "seconds"
    split = next(n for n in flow if n["type"] == "split")
    fan = by_id(flow)[split["wires"][0][0]]
    assert fan["type"] == "function"
    assert "adjust(1)" in fan["func"]


def test_native_step_of_another_engine_is_refused() -> None:
    from fluxo_core.errors import UnsupportedFeatureError

    wf = workflow([{"id": "x", "kind": "native", "engine": "argo", "config": {"name": "t"}}])
    with pytest.raises(UnsupportedFeatureError, match="native argo step"):
        to_nodered(wf)


# --- the JSONata the flows run means what the IR means ----------------------------------------

OPS = [
    {"op": "set", "path": "a.b[0].c", "value": 1},
    {"op": "set", "path": "total", "expr": "$sum(items.(qty * price))"},
    {"op": "move", "from": "n", "to": "m.k"},
    {"op": "set", "path": "s", "expr": "$$.m.k * 2"},
    {"op": "set", "path": "gone", "expr": "nothing.here"},
    {"op": "delete", "path": "d.e"},
    {"op": "delete", "path": "arr[1]"},
    {"op": "set", "path": '["odd.key"]', "value": "x"},
    {"op": "jsonata", "expr": "{'w': $$.m.k, 'all': $}"},
]
PAYLOADS = [
    {"n": 3, "d": {"e": 1, "f": 2}, "arr": [1, 2, 3], "items": [{"qty": 2, "price": 5}]},
    [{"n": 1}, {"n": 2, "arr": [5]}],
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_change_rules_apply_like_the_transform_service(payload: Any) -> None:
    step = TransformStep.model_validate({"id": "t", "kind": "transform", "ops": OPS})
    msg = {"payload": copy.deepcopy(payload)}
    for rule in change_rules(step.ops):
        msg["payload"] = jsonata.Jsonata(rule["to"]).evaluate(msg)
    ops = [op.model_dump(by_alias=True, exclude_unset=True) for op in step.ops]
    assert msg["payload"] == Transform.parse(ops, where="t").apply(payload)


WITH = {
    "source": "web",
    "keep": {"over": [1, None]},
    "double": {"jsonata": "n * 2"},
    "same": {"jsonata": "$$.n = $.n"},
    "absent": {"jsonata": "no_such_field"},
    "n": {"jsonata": "n + 1"},
}


@pytest.mark.parametrize(
    "payload", [{"n": 3, "keep": 1, "absent": "a"}, [{"n": 1}, {"n": 5, "keep": 0}], [], {}]
)
def test_with_rule_sets_the_parameters_like_the_step_engine(payload: Any) -> None:
    step = ServiceStep.model_validate({"id": "s", "kind": "service", "service": "x", "with": WITH})
    expr = with_jsonata(step.static_params, step.param_expressions, "payload.payload")
    msg = {"payload": {"payload": copy.deepcopy(payload)}}
    out = jsonata.Jsonata(expr).evaluate(msg)
    assert out == Parameters(step.with_).apply(payload)


def test_with_rule_refuses_an_item_that_is_not_an_object() -> None:
    expr = with_jsonata({"a": 1}, {}, "payload.payload")
    with pytest.raises(Exception, match="must be an object or an array of objects"):
        jsonata.Jsonata(expr).evaluate({"payload": {"payload": [{"n": 1}, "s"]}})


def test_with_puts_a_change_node_between_the_packet_and_the_gateway() -> None:
    wf = workflow(
        [
            {
                "id": "tag",
                "kind": "service",
                "service": "noop",
                "with": {"a": 1, "b": {"jsonata": "n"}},
                "next": ["plain"],
            },
            {"id": "plain", "kind": "service", "service": "noop"},
        ]
    )
    flow = to_nodered(wf)
    assert check_flow(flow) == []
    nodes = by_id(flow)
    (params,) = (n for n in flow if n["type"] == "change" and n.get("name") == "tag: with")
    assert params["rules"] == [
        {
            "t": "set",
            "p": "payload.payload",
            "pt": "msg",
            "to": with_jsonata({"a": 1}, {"b": "n"}, "payload.payload"),
            "tot": "jsonata",
        }
    ]
    (request,) = (n for n in flow if n.get("name") == "tag: call noop")
    assert request["wires"] == [[params["id"]]]
    http = nodes[params["wires"][0][0]]
    assert http["type"] == "http request"
    # Its failure is the step's: caught with the gateway's, told apart in the result node.
    (catch,) = (n for n in flow if n.get("name") == "tag: unreachable")
    assert catch["scope"] == [params["id"], http["id"]]
    result = nodes[http["wires"][0][0]]
    assert params["id"] in result["func"]
    # A step without with keeps its plain chain.
    (plain,) = (n for n in flow if n.get("name") == "plain: call noop")
    assert nodes[plain["wires"][0][0]]["type"] == "http request"


CONDITIONS = [
    {"path": "total", "op": "gte", "value": 1000},
    {"path": "total", "op": "lt", "value": 10},
    {"path": "tier", "op": "eq", "value": "gold"},
    {"path": "tier", "op": "ne", "value": "gold"},
    {"path": "tier", "op": "in", "value": ["gold", "silver"]},
    {"path": "tags", "op": "contains", "value": "vip"},
    {"path": "name", "op": "contains", "value": "vip"},
    {"path": "name", "op": "regex", "value": "^a/b"},
    {"path": "missing", "op": "exists"},
    {"path": "missing", "op": "not_exists"},
    {
        "all": [
            {"path": "total", "op": "gt", "value": 5},
            {"not": {"path": "tier", "op": "eq", "value": "gold"}},
        ]
    },
    {
        "any": [
            {"path": "total", "op": "gt", "value": 5000},
            {"path": "tags", "op": "contains", "value": "vip"},
        ]
    },
    {"jsonata": "$count(tags) > 1"},
]
SUBJECTS = [
    {"total": 1500, "tier": "gold", "tags": ["vip", "x"], "name": "a/b-vip"},
    {"total": "1500", "tier": "bronze", "tags": [], "name": "bob"},
    {"total": 3},
]


@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: json.dumps(c)[:40])
def test_switch_rules_decide_like_the_step_engine(condition: dict[str, Any]) -> None:
    step = SwitchStep.model_validate(
        {"id": "s", "kind": "switch", "cases": [{"when": condition, "next": ["x"]}]}
    )
    when = step.cases[0].when
    for payload in SUBJECTS:
        got = jsonata.Jsonata(condition_jsonata(when)).evaluate({"payload": payload}) is True
        assert got == evaluate(when, payload), payload


# --- import: mapping -----------------------------------------------------------------------------


def test_import_maps_portable_nodes_and_keeps_the_rest_native() -> None:
    imp = from_nodered(TAB_FLOW)
    assert [w.metadata.name for w in imp.workflows] == ["orders"]
    wf = imp.workflows[0]
    assert wf.spec.engine == "nodered"  # the function node stays native
    assert wf.spec.description == "Route orders"
    steps = wf.spec.steps_by_id()
    assert wf.spec.start_id == "prepare"
    prepare = steps["prepare"]
    assert isinstance(prepare, TransformStep)
    assert [op.op for op in prepare.ops] == ["jsonata", "set", "set", "delete"]
    route = steps["by-size"]
    assert isinstance(route, SwitchStep)
    assert route.mode == "first"
    assert route.cases[0].model_dump()["when"] == {"path": "total", "op": "gte", "value": 1000}
    assert route.cases[0].next == ["review"]
    assert route.cases[1].next == ["notify"]
    assert route.default == []  # the debug node is not a step
    review = steps["review"]
    assert isinstance(review, NativeStep)
    assert review.config == TAB_FLOW[4]
    # kept as the node (a call of the http service on the step engine, Node-RED's message out)
    notify = steps["notify"]
    assert isinstance(notify, NativeStep)
    assert notify.config == next(n for n in TAB_FLOW if n["id"] == "hr1")
    assert (imp.triggers[0].kind, imp.triggers[0].schedule) == ("cron", "*/5 * * * *")
    assert imp.triggers[0].start == ("prepare",)
    assert imp.triggers[0].payload == {"total": "5", "cust": {"tier": "gold"}}


def test_imported_jsonata_keeps_its_node_red_meaning() -> None:
    wf = from_nodered(TAB_FLOW).workflows[0]
    steps = wf.spec.steps_by_id()
    prepare = steps["prepare"]
    assert isinstance(prepare, TransformStep)
    ops = [op.model_dump(by_alias=True, exclude_unset=True) for op in prepare.ops]
    payload = {"total": "600", "cust": {"tier": "gold"}, "tmp": 1}
    out = Transform.parse(ops, where="x").apply(payload)
    assert out == {"total": 1200, "status": "new", "customer": {"tier": "gold"}, "seen": [1]}
    route = steps["by-size"]
    assert isinstance(route, SwitchStep)
    assert evaluate(route.cases[0].when, out) is True
    assert evaluate(route.cases[1].when, out) is True  # payload.customer.tier = 'gold'
    assert evaluate(route.cases[1].when, {**out, "customer": {"tier": "tin"}}) is False


def test_old_format_split_join_delay_and_interval_trigger() -> None:
    imp = from_nodered(OLD_FLOW, name="Batch Job")
    wf = imp.workflows[0]
    assert wf.metadata.name == "batch-job"
    kinds = {s.id: s.kind for s in wf.spec.steps}
    # payload = payload.items may be an array or any value, which an IR transform cannot give;
    # split and its auto join stay the nodes: Node-RED's split acts by the payload's type when
    # the message arrives (a string splits by "\n"), which the IR's array split cannot know.
    assert kinds == {"change": "native", "split": "native", "delay": "delay", "join": "native"}
    steps = wf.spec.steps_by_id()
    assert steps["split"].model_dump()["config"]["type"] == "split"
    assert steps["join"].model_dump()["config"]["type"] == "join"
    assert wf.spec.steps_by_id()["delay"].model_dump()["seconds"] == 0.5
    trigger = imp.triggers[0]
    assert (trigger.kind, trigger.interval_s, trigger.once) == ("cron", 60.0, True)
    assert any("no tab" in note for note in imp.report.notes)


def test_subflow_becomes_a_workflow_and_its_instance_a_call() -> None:
    imp = from_nodered(SUBFLOW_FLOW)
    names = [w.metadata.name for w in imp.workflows]
    assert names == ["subflow-add-tax", "billing"]
    sub, billing = imp.workflows
    assert sub.spec.output == "tax"
    assert sub.spec.description == "Adds VAT"
    # an instance without properties runs a copy of the subflow's nodes in its workflow
    (copy,) = billing.spec.steps
    assert copy.kind == "transform"
    assert imp.source.workflows["billing"].step_nodes[copy.id] == "sfc"

    # with properties (env) too: the copy is the same, as the subflow's nodes read none of them
    def with_env(prop: dict[str, Any]) -> list[dict[str, Any]]:
        return [{**n, "env": [prop]} if n["id"] == "inst" else n for n in SUBFLOW_FLOW]

    rate = {"name": "RATE", "type": "num", "value": "0.2"}
    assert from_nodered(with_env(rate)).workflows[1].spec.steps[0].kind == "transform"
    # a property only Node-RED can evaluate (JSONata, credentials) keeps the instance native
    computed = {"name": "RATE", "type": "jsonata", "value": "0.1 * 2"}
    assert from_nodered(with_env(computed)).workflows[1].spec.steps[0].kind == "native"
    # a subflow without outputs: messages end inside the copy
    old = [{**n, "out": []} if n["id"] == "sf1" else n for n in SUBFLOW_FLOW]
    assert [s.kind for s in from_nodered(old).workflows[1].spec.steps] == ["transform"]
    assert imp.triggers[0].kind == "api"
    assert imp.triggers[0].path == "/bill"
    assert imp.report.get("ho").status == "dropped"


def test_links_and_junctions_become_edges() -> None:
    imp = from_nodered(LINK_FLOW)
    a, b = imp.workflows
    steps = a.spec.steps_by_id()
    # inject -> link out -> link in -> junction -> [stamp, link out to B -> B's step]
    assert a.spec.start_id == "start"
    assert steps["start"].model_dump()["next"] == ["stamp", "b"]
    # the node it crosses to on tab B runs in this workflow (a copy), and in B's own
    assert imp.source.workflows[a.metadata.name].step_nodes["b"] == "b-fn"
    stamp = steps["stamp"]
    assert isinstance(stamp, TransformStep)
    assert stamp.ops[0].model_dump()["expr"] == "$millis()"
    assert imp.report.get("j1").status == "dropped"
    assert imp.report.get("l-target").status == "dropped"
    assert [s.id for s in b.spec.steps] == ["b"]


def test_loops_are_unrolled_and_disabled_nodes_dropped() -> None:
    imp = from_nodered(LOOP_FLOW)
    workflow = imp.workflows[0]
    steps = workflow.spec.steps_by_id()
    nodes = imp.source.workflows[workflow.metadata.name].step_nodes
    assert steps["try"].model_dump()["next"] == ["delay", "change"]
    # the wire back to 'try' goes on to a copy of the loop for the next pass, ...
    passes = ["try"]
    while True:
        delay = next(s for s in steps[passes[-1]].model_dump()["next"] if nodes[s] == "lp-wait")
        (again,) = steps[delay].model_dump()["next"]
        if steps[again].kind != "native":
            break
        assert nodes[again] == "lp-fn"
        passes.append(again)
    assert len(passes) == 1 + 16
    # ... and past the bound to a step that fails the job, saying why
    bound = steps[again].model_dump()
    assert bound["kind"] == "transform"
    assert "more than 16 times" in bound["ops"][0]["expr"]
    assert any("lp-wait -> lp-fn closes a loop" in note for note in imp.report.notes)
    assert imp.report.get("lp-d").status == "dropped"
    assert "disabled" in imp.report.get("lp-d").reason


def test_fidelity_report_classifies_every_node() -> None:
    flow = REPRESENTATIVE["all-in-one"]
    imp = from_nodered(flow)
    report = imp.report
    assert [e.node_id for e in report.nodes] == [n["id"] for n in flow]
    status = {e.node_id: e.status for e in report.nodes}
    assert status["t1"] == status["ch1"] == status["sw1"] == "mapped"
    # kept as the node: the step engine runs it as a call of the http service, Node-RED's msg out
    assert status["hr1"] == "native"
    assert status["in1"] == status["hi"] == status["g-tpl"] == "mapped"
    assert status["inst"] == "dropped"  # a subflow instance: a copy of its subflow's nodes
    assert status["fn1"] == status["mq-in"] == status["mq-out"] == status["lp-fn"] == "native"
    assert status["dbg1"] == status["c1"] == status["grp"] == status["broker1"] == "dropped"
    assert report.get("in1").target == "trigger cron"
    assert report.get("sw1").target == "step 'by-size' (switch)"
    assert report.get("lp-done").status == "native"
    assert "msg.topic" in report.get("lp-done").reason or "topic" in report.get("lp-done").reason
    assert "2 users" in report.get("broker1").reason
    assert report.get("unused-cfg").workflow is None
    assert sum(report.counts().values()) == len(flow)
    assert all(e.reason for e in report.nodes)
    assert len(report.lines()) == len(flow) + len(report.notes)


@pytest.mark.parametrize(
    ("node", "why"),
    [
        (
            {
                "type": "change",
                "rules": [{"t": "set", "p": "topic", "pt": "msg", "to": "x", "tot": "str"}],
            },
            "topic",
        ),
        (
            {
                "type": "change",
                "rules": [{"t": "set", "p": "payload", "pt": "msg", "to": "x", "tot": "str"}],
            },
            "rule 1",
        ),
        (
            {
                "type": "change",
                "rules": [
                    {"t": "set", "p": "payload.a", "pt": "msg", "to": "$env('X')", "tot": "jsonata"}
                ],
            },
            "rule 1",
        ),
        (
            {
                "type": "switch",
                "property": "topic",
                "propertyType": "msg",
                "rules": [{"t": "eq", "v": "a", "vt": "str"}],
            },
            "topic",
        ),
        (
            {
                "type": "switch",
                "property": "payload",
                "propertyType": "msg",
                "rules": [{"t": "head", "v": "1"}],
            },
            "rule 1",
        ),
        ({"type": "delay", "pauseType": "rate", "rate": "1"}, "rate"),
        ({"type": "join", "mode": "custom", "count": "3"}, "custom"),
        ({"type": "http request", "method": "use", "url": ""}, "msg.method"),
        (
            {"type": "http request", "method": "GET", "url": "https://x/{{{payload.id}}}"},
            "mustache",
        ),
        (
            {"type": "template", "field": "payload", "template": "{{payload}}", "output": "str"},
            "string",
        ),
        (
            {"type": "template", "field": "payload.t", "template": "{{#payload}}x{{/payload}}"},
            "sections",
        ),
        ({"type": "csv"}, "csv runs only on Node-RED"),
    ],
)
def test_nodes_that_do_not_fit_stay_native_with_a_reason(node: dict[str, Any], why: str) -> None:
    flow = [{"id": "n", "z": "t", "x": 1, "y": 1, "wires": [[]], **node}]
    imp = from_nodered(flow)
    entry = imp.report.get("n")
    assert entry.status == "native"
    assert why in entry.reason
    native = imp.workflows[0].spec.steps_by_id()[entry.target.split("'")[1]]
    assert isinstance(native, NativeStep)
    assert native.config == flow[0]


def test_mustache_template_becomes_jsonata() -> None:
    wf = from_nodered(GROUP_FLOW).workflows[0]
    greet = wf.spec.steps_by_id()["greet"]
    assert isinstance(greet, TransformStep)
    ops = [op.model_dump(by_alias=True, exclude_unset=True) for op in greet.ops]
    out = Transform.parse(ops, where="x").apply({"name": "<Ada>", "title": "Dr & Co"})
    assert out["greeting"] == "Hello <Ada> & Dr &amp; Co!"  # {{x}} is HTML-escaped, {{{x}}} not


def test_bad_input_is_refused_with_located_problems() -> None:
    with pytest.raises(MalformedRequestError):
        from_nodered("[{")
    with pytest.raises(ValidationError, match="JSON array of nodes"):
        from_nodered({"id": "x"})
    with pytest.raises(ValidationError) as info:
        from_nodered([{"id": "a", "type": "tab"}, {"id": "a", "type": "tab"}, {"type": "x"}])
    locations = [loc for loc, _ in info.value.problems]
    assert locations == ["flow[1].id", "flow[2].id"]


def test_admin_api_shape_and_json_text_are_accepted() -> None:
    assert (
        from_nodered({"flows": TAB_FLOW, "rev": "abc"}).workflows
        == from_nodered(TAB_FLOW).workflows
    )
    assert from_nodered(json.dumps(TAB_FLOW).encode()).workflows == from_nodered(TAB_FLOW).workflows


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REPRESENTATIVE))
def test_round_trip_is_lossless(name: str) -> None:
    flow = REPRESENTATIVE[name]
    original = copy.deepcopy(flow)
    imp = from_nodered(flow)
    assert to_nodered_flows(imp.workflows, source=imp.source, explicit_tabs=False) == original
    assert flow == original  # the import does not touch its input


@pytest.mark.parametrize("name", list(REPRESENTATIVE))
def test_round_trip_with_tabs_is_deployable(name: str) -> None:
    flow = REPRESENTATIVE[name]
    imp = from_nodered(flow)
    out = to_nodered_flows(imp.workflows, source=imp.source)
    nodes = by_id(out)
    assert all(nodes[n["id"]] == n for n in flow)  # every node as it was
    added = [n for n in out if n["id"] not in by_id(flow)]
    assert all(n["type"] == "tab" for n in added)
    assert check_flow(out) == []


def test_old_format_export_adds_the_missing_tab() -> None:
    imp = from_nodered(OLD_FLOW)
    out = to_nodered(imp.workflows[0], source=imp.source)
    assert out[0] == {
        "id": "f00.d",
        "type": "tab",
        "label": "flow",
        "disabled": False,
        "info": "",
        "env": [],
    }
    assert out[1:] == OLD_FLOW
    assert check_flow(out) == []


def test_one_workflow_export_brings_its_config_nodes_and_subflows() -> None:
    flow = TAB_FLOW + SUBFLOW_FLOW + CONFIG_FLOW
    imp = from_nodered(flow)
    sensors = to_nodered(imp.workflow("sensors"), source=imp.source)
    assert [n["id"] for n in sensors] == ["t6", "mq-in", "sw-t", "mq-out", "broker1", "tls1"]
    billing = to_nodered(imp.workflow("billing"), source=imp.source)
    assert [n["id"] for n in billing] == ["sf1", "sfc", "t2", "hi", "inst", "ho"]
    assert check_flow(sensors) == []
    assert check_flow(billing) == []


def _edit(wf: Workflow, step_id: str, **changes: Any) -> Workflow:
    data = wf.model_dump(by_alias=True, exclude_unset=True)
    for step in data["spec"]["steps"]:
        if step["id"] == step_id:
            step.update(changes)
    return validate_workflow(data)


def test_an_edited_step_is_rendered_anew_in_place() -> None:
    imp = from_nodered(TAB_FLOW)
    wf = imp.workflows[0]
    route = wf.spec.steps_by_id()["by-size"].model_dump(by_alias=True, exclude_unset=True)
    route["cases"][0]["when"] = {"path": "total", "op": "gte", "value": 5000}
    edited = _edit(wf, "by-size", cases=route["cases"])
    out = to_nodered(edited, source=imp.source)
    assert check_flow(out) == []
    nodes, before = by_id(out), by_id(TAB_FLOW)
    switch = nodes["sw1"]
    assert (switch["type"], switch["x"], switch["y"], switch["z"]) == ("switch", 480, 80, "t1")
    assert "5000" in switch["rules"][0]["v"]
    assert switch["wires"] == [["fn1"], ["hr1"], ["dbg1"]]  # the debug wire on 'otherwise' stays
    assert all(nodes[n["id"]] == n for n in TAB_FLOW if n["id"] != "sw1")
    assert set(nodes) == set(before)


def test_removed_and_added_steps() -> None:
    imp = from_nodered(TAB_FLOW)
    wf = imp.workflows[0]
    data = wf.model_dump(by_alias=True, exclude_unset=True)
    steps = {s["id"]: s for s in data["spec"]["steps"]}
    del steps["review"]
    steps["by-size"]["cases"] = steps["by-size"]["cases"][1:]
    steps["notify"]["next"] = ["log"]
    steps["log"] = {"id": "log", "kind": "service", "service": "notify-log"}
    data["spec"]["steps"] = list(steps.values())
    out = to_nodered(validate_workflow(data), source=imp.source)
    assert check_flow(out) == []
    nodes = by_id(out)
    assert "fn1" not in nodes
    assert nodes["sw1"]["wires"][0] == ["hr1"]
    # the http request (a native step) changed its next: the same node, wired anew
    hr1 = next(n for n in TAB_FLOW if n["id"] == "hr1")
    assert {**nodes["hr1"], "wires": None} == {**hr1, "wires": None}
    calls = [n["url"] for n in out if n["type"] == "http request"]
    assert any(u.endswith("/v1/services/notify-log/calls?wait=30") for u in calls)
    # the added call retries through its delay node, back into its request function
    result = next(n for n in out if n.get("name") == "log: result")
    retry = nodes[result["wires"][1][0]]
    assert retry["type"] == "delay"
    assert retry["pauseType"] == "delayv"
    assert by_id(out)[retry["wires"][0][0]]["name"] == "log: call notify-log"
    log = next(n for n in out if n.get("name") == "log: call notify-log")
    assert nodes["hr1"]["wires"] == [["dbg1", log["id"]]]  # the debug wire is kept
    # untouched nodes are untouched
    assert nodes["ch1"] == TAB_FLOW[2]
    assert nodes["in1"] == TAB_FLOW[1]


def test_without_source_an_imported_workflow_exports_like_any_other() -> None:
    imp = from_nodered(TAB_FLOW)
    flow = to_nodered(imp.workflows[0])
    assert check_flow(flow) == []
    kept = next(n for n in flow if n["type"] == "function" and n.get("func") == TAB_FLOW[4]["func"])
    assert kept["name"] == "Review"


# --- check_flow ----------------------------------------------------------------------------------


def test_check_flow_finds_what_node_red_would_accept_silently() -> None:
    flow = [
        {"id": "t", "type": "tab", "label": "x"},
        {"id": "a", "type": "inject", "z": "t", "x": 1, "y": 1, "wires": [["ghost"]]},
        {"id": "a", "type": "debug", "z": "t", "x": 1, "y": 1, "wires": []},
        {"id": "b", "type": "debug", "x": 1, "y": 1, "wires": []},
        {"id": "c", "type": "debug", "z": "nowhere", "wires": []},
        {"id": "d", "type": "subflow:missing", "z": "t", "x": 1, "y": 1, "wires": []},
        {
            "id": "e",
            "type": "link out",
            "z": "t",
            "g": "nogroup",
            "links": ["zz"],
            "x": 1,
            "y": 1,
            "wires": [],
        },
    ]
    problems = dict(check_flow(flow, known_types=["inject", "debug", "link out"]))
    assert "ghost" in problems["flow[1].wires[0][0]"]
    assert "duplicate id 'a'" in problems["flow[2].id"]
    assert "no z" in problems["flow[3].z"]
    assert "names no tab" in problems["flow[4].z"]
    assert "no x position" in problems["flow[4].x"]
    assert "subflow is not in the flow" in problems["flow[5].type"]
    assert "group 'nogroup'" in problems["flow[6].g"]
    assert "'zz'" in problems["flow[6].links[0]"]
    unknown = dict(
        check_flow(
            [
                {"id": "t", "type": "tab"},
                {"id": "q", "type": "mystery", "z": "t", "x": 0, "y": 0, "wires": []},
            ],
            known_types=["inject"],
        )
    )
    assert "not installed" in unknown["flow[1].type"]


def test_the_garbage_collector_is_restored_after_an_import_or_export() -> None:
    """Imports pause the cyclic collector for speed; it must come back whatever happens."""
    assert gc.isenabled()
    with pytest.raises(ValidationError):
        from_nodered([{"id": "a"}])  # a node without a type
    assert gc.isenabled()
    to_nodered_flows([example("order-intake")])
    assert gc.isenabled()
    gc.disable()
    try:
        from_nodered([])
        assert not gc.isenabled(), "a caller's choice to run without the collector is kept"
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("to", "tot", "mapped"),
    [
        ('{"total": payload.a + 1}', "jsonata", True),
        ("payload.a + 1", "jsonata", False),
        ('$string(payload.a) & "x"', "jsonata", False),
        ('{"a": 1}.a', "jsonata", False),
        ("", "date", False),
        ("payload.items", "msg", False),
        ("payload", "msg", True),
        ("7", "num", False),
        ("text", "str", False),
    ],
)
def test_a_change_setting_the_whole_payload_maps_only_when_it_surely_gives_an_object(
    to: str, tot: str, mapped: bool
) -> None:
    node = {
        "id": "c",
        "type": "change",
        "z": "t",
        "rules": [{"t": "set", "p": "payload", "pt": "msg", "to": to, "tot": tot}],
        "wires": [],
    }
    inject = {"id": "i", "type": "inject", "z": "t", "props": [{"p": "payload"}], "wires": [["c"]]}
    flow = [{"id": "t", "type": "tab", "label": "flow"}, inject, node]
    step = from_nodered(flow).workflows[0].spec.steps[0]
    assert step.kind == ("transform" if mapped else "native")
    if not mapped:
        reason = from_nodered(flow).report.get("c").reason
        assert "payload" in reason


@pytest.mark.parametrize(
    ("rule", "mapped"),
    [
        # Node-RED deletes msg.payload.x (removes an array element) when the value is undefined;
        # an IR set keeps the old value: only a value that is surely there maps.
        ({"p": "payload.x", "to": "payload.nothere", "tot": "jsonata"}, False),
        ({"p": "payload.l[1]", "to": "payload.nothere", "tot": "jsonata"}, False),
        ({"p": "payload.x", "to": "payload.a + 1", "tot": "jsonata"}, False),
        ({"p": "payload.x", "to": "payload.nothere", "tot": "msg"}, False),
        ({"p": "payload.x", "to": '{"a": payload.a}', "tot": "jsonata"}, True),
        ({"p": "payload.x", "to": "[payload.a]", "tot": "jsonata"}, True),
        ({"p": "payload.x", "to": "[1][0]", "tot": "jsonata"}, False),
        ({"p": "payload.x", "to": '"text"', "tot": "jsonata"}, True),
        ({"p": "payload.x", "to": "-1.5e3", "tot": "jsonata"}, True),
        ({"p": "payload.x", "to": "$millis()", "tot": "jsonata"}, True),
        # & makes a string even of missing operands; a looser operator may give nothing
        (
            {"p": "payload.x", "to": '"id " & payload.id & $string(payload.n)', "tot": "jsonata"},
            True,
        ),
        ({"p": "payload.x", "to": '"id " & payload.id ? "a" : "b"', "tot": "jsonata"}, False),
        ({"p": "payload.x", "to": '("id " & payload.id).x', "tot": "jsonata"}, False),
        ({"p": "payload.x", "to": "payload", "tot": "msg"}, True),
        ({"p": "payload.x", "to": "", "tot": "date"}, True),
        ({"p": "payload.x", "to": "7", "tot": "num"}, True),
    ],
)
def test_a_change_setting_a_field_maps_only_when_its_value_is_surely_defined(
    rule: dict[str, Any], mapped: bool
) -> None:
    node = {
        "id": "c",
        "type": "change",
        "z": "t",
        "rules": [{"t": "set", "pt": "msg", **rule}],
        "wires": [],
    }
    inject = {"id": "i", "type": "inject", "z": "t", "props": [{"p": "payload"}], "wires": [["c"]]}
    flow = [{"id": "t", "type": "tab", "label": "flow"}, inject, node]
    imported = from_nodered(flow)
    assert imported.workflows[0].spec.steps[0].kind == ("transform" if mapped else "native")
    if not mapped:
        assert "may be undefined" in imported.report.get("c").reason


def test_a_change_moving_a_field_stays_native() -> None:
    """Node-RED's move sets the target to the source: a missing source deletes the target; an IR
    move of a missing path does nothing, so a move between two paths is not claimed."""
    move = {"t": "move", "p": "payload.a", "pt": "msg", "to": "payload.b", "tot": "msg"}
    node = {"id": "c", "type": "change", "z": "t", "rules": [move], "wires": []}
    inject = {"id": "i", "type": "inject", "z": "t", "props": [{"p": "payload"}], "wires": [["c"]]}
    imported = from_nodered([{"id": "t", "type": "tab", "label": "flow"}, inject, node])
    assert imported.workflows[0].spec.steps[0].kind == "native"
    assert "deletes the target" in imported.report.get("c").reason
