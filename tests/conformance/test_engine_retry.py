"""Retry continues a failed job from its failed step on every engine: the same case on the step
engine, a real Node-RED and Argo (the test interpreter), with the stack of
:mod:`tests.conformance.test_engines`.

The job's middle step calls ``gated``, which fails until the test opens its gate. The job fails
there; a first retry fails again (the gate is still closed); once the gate is open a second
retry finishes it. On the step engine the job continues from its failed step; on Node-RED and
Argo a new run answers the finished step from its stored result and the gateway makes the failed
call again as its next attempt. Either way the gated service runs once per retry, every call
that succeeded is billed once (failed calls are not billed), and the outcomes are the same.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from fluxo_core.errors import ConflictError
from tests.conformance.test_engines import (  # noqa: F401  (stack: the fixture)
    ME,
    Stack,
    assert_same,
    service,
    stack,
    workflow,
)
from tests.support import services as test_services

pytestmark = pytest.mark.timeout(180)

GATED = workflow(
    "gated",
    service("before", "inc", "gate"),
    service("gate", "gated", "after"),
    service("after", "inc"),
)

# The gate has a retry budget of its own (spent by the first run: each job retry adds one
# attempt, as on the step engine), and a failure handled by on_error comes before it: the new
# runs go past it as the first did, without calling it again.
GATED_WITH_RETRY = workflow(
    "gated-retry",
    service("doomed", "broken", "before", on_error="continue"),
    service("before", "inc", "gate"),
    service("gate", "gated", "after", retry={"max_attempts": 2, "backoff_s": 0.1}, timeout_s=10),
    service("after", "inc"),
)

CASES = {
    "plain": (GATED, 1),
    "step-retry-and-on-error": (GATED_WITH_RETRY, 2),
}


def _runs_of_gate() -> int:
    return Path(os.environ["FLUXO_TEST_EFFECTS"]).read_text().count("gated ")


@pytest.mark.parametrize("case", list(CASES))
async def test_retry_continues_a_failed_job_from_its_failed_step_on_every_engine(
    stack: Stack,  # noqa: F811
    case: str,
) -> None:
    document, budget = CASES[case]
    outcomes = []
    for engine in ("step", stack.engine):
        job_id = await stack.start(document, {"n": 1}, engine)
        for attempt in (1, 2, 3):
            if attempt > 1:
                if attempt == 3:
                    test_services.open_gate()
                retried = await stack.platform.job_control.retry(ME, job_id)
                assert retried.status in ("queued", "running"), (engine, retried)
            job = await stack.finished(job_id)
            # The first run spends the step's budget; each retry makes one more attempt.
            assert _runs_of_gate() == budget + attempt - 1, (engine, attempt)
            if attempt < 3:
                assert job.status == "failed", (engine, attempt, job)
                assert job.error is not None
                assert job.error["step"] == "gate", (engine, job.error)
        assert job.status == "succeeded", (engine, job)
        outcome = await stack.outcome(job)
        billed = Counter(record["step_id"] for record in outcome["usage"])
        assert billed == Counter({"before": 1, "gate": 1, "after": 1}), (engine, outcome["usage"])
        made = Counter(step for step, _ in await stack.calls_of(job_id))
        assert made["before"] == made["after"] == 1, (engine, made)
        assert made.get("doomed", 0) == (1 if document is GATED_WITH_RETRY else 0), made
        with pytest.raises(ConflictError, match="not failed"):
            await stack.platform.job_control.retry(ME, job_id)
        outcomes.append(outcome)
    on_step, on_engine = outcomes
    assert on_step["result"] == {"n": 3, "passed": True}
    steps = {s["key"]: (s["phase"], s["attempt"]) for s in on_step["steps"]}
    assert (steps["before"], steps["gate"], steps["after"]) == (
        ("succeeded", 1),
        ("succeeded", budget + 2),
        ("succeeded", 1),
    )
    assert_same(on_engine, on_step)
