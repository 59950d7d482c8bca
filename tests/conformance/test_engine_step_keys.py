"""Steps after a merging step run once per token on every engine, with the same keys.

A step reached by two wires (``d``) runs twice, ``d<b`` and ``d<c``; the steps after it inherit
that origin (``e<b``, ``e<c``: :mod:`fluxo_core.ir.step_keys`), so each of their executions is
a call of its own. When they shared a key, the second call was the first one again (its id is
derived from the key): the job recorded one and waited forever for the other. Each case runs on
the step engine, then on a real Node-RED and on Argo (the test interpreter), with the stack of
:mod:`tests.conformance.test_engines`: the same result, keys, calls and ledger.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.conformance.test_engines import (  # noqa: F401  (stack: the fixture)
    Stack,
    assert_same,
    canonical,
    service,
    stack,
    workflow,
)

pytestmark = pytest.mark.timeout(120)


def _diamond(name: str, *after: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """start -> a -> (b, c) -> d, then ``after``: ``d`` merges the two paths."""
    return workflow(
        name,
        service("start", "inc", "a"),
        service("a", "inc", "b", "c"),
        service("b", "inc", "d"),
        service("c", "echo", "d"),
        *after,
        **spec,
    )


DIAMOND_CHAIN = _diamond(
    "diamond-chain",
    service("d", "inc", "e"),
    service("e", "inc", "f"),
    service("f", "echo"),
)

SPLIT_AFTER_MERGE = _diamond(
    "split-after-merge",
    service("d", "inc", "each"),
    {"id": "each", "kind": "split", "path": "items", "next": ["x"]},
    service("x", "inc", "gather"),
    {"id": "gather", "kind": "join", "split": "each", "next": ["y"]},
    service("y", "echo"),
    # The items as the job's result: a result that is an array itself (the join's) comes back
    # flattened from a branch on Argo, a difference of its own.
    output="x",
)

OUTPUTS_AFTER_MERGE = _diamond(
    "outputs-after-merge",
    service("d", "fan-out", "e"),
    service("e", "echo"),
)

MERGE_OF_MERGES = _diamond(
    "merge-of-merges",
    service("d", "inc", "e", "f"),
    service("e", "inc", "g"),
    service("f", "echo", "g"),
    service("g", "inc", "h"),
    service("h", "echo"),
)

CASES: dict[str, tuple[dict[str, Any], Any, list[str]]] = {
    "diamond-then-chain": (
        DIAMOND_CHAIN,
        {"n": 0},
        ["a", "b", "c", "d<b", "d<c", "e<b", "e<c", "f<b", "f<c", "start"],
    ),
    "split-after-the-merge": (
        SPLIT_AFTER_MERGE,
        {"n": 0, "items": [{"n": 10}, {"n": 20}]},
        [
            "a",
            "b",
            "c",
            "d<b",
            "d<c",
            "start",
            "x[0]<b",
            "x[0]<c",
            "x[1]<b",
            "x[1]<c",
            "y<b",
            "y<c",
        ],
    ),
    "outputs-after-the-merge": (
        OUTPUTS_AFTER_MERGE,
        {"items": ["p", "q"]},
        ["a", "b", "c", "d<b", "d<c", "e[0]<b", "e[0]<c", "e[1]<b", "e[1]<c", "start"],
    ),
    "merge-of-merges": (
        MERGE_OF_MERGES,
        {"n": 0},
        [
            "a",
            "b",
            "c",
            "d<b",
            "d<c",
            "e<b",
            "e<c",
            "f<b",
            "f<c",
            "g<e<b",
            "g<e<c",
            "g<f<b",
            "g<f<c",
            "h<e<b",
            "h<e<c",
            "h<f<b",
            "h<f<c",
            "start",
        ],
    ),
}

# What each case's job returns: the end of each path, in the order the paths end.
RESULTS: dict[str, list[Any]] = {
    "diamond-then-chain": [{"n": 4}, {"n": 5}],
    "split-after-the-merge": [{"n": 11}, {"n": 11}, {"n": 21}, {"n": 21}],
    "outputs-after-the-merge": [
        {"item": "p", "index": 0},
        {"item": "p", "index": 0},
        {"item": "q", "index": 1},
        {"item": "q", "index": 1},
    ],
    "merge-of-merges": [{"n": 4}, {"n": 5}, {"n": 5}, {"n": 6}],
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_path_after_a_merging_step_runs_on_every_engine(
    stack: Stack,  # noqa: F811
    case: str,
) -> None:
    document, payload, keys = CASES[case]
    outcomes = []
    for engine in ("step", stack.engine):
        job = await stack.run(document, payload, engine)
        outcome = await stack.outcome(job, unordered=True)
        assert outcome["status"] == "succeeded", (engine, outcome)
        assert outcome["result"] == sorted(RESULTS[case], key=canonical), (engine, outcome)
        assert [s["key"] for s in outcome["steps"]] == keys, engine
        # One call per execution, each billed once.
        made = Counter(step for step, _ in await stack.calls_of(job.id))
        assert made == Counter(key.split("<")[0].split("[")[0] for key in keys), engine
        assert len(outcome["usage"]) == len(keys), engine
        outcomes.append(outcome)
    assert_same(outcomes[1], outcomes[0])
