"""A block stops a job at its next step on every engine, and resume finishes it: the same case on
the step engine, a real Node-RED and Argo (the test interpreter), with the stack of
:mod:`tests.conformance.test_engines`.

The job waits in a delay after its first call when its workflow is blocked; when the delay ends,
its next call is refused, so the job ends ``blocked``, naming the block and the step. Once the
block is lifted, ``resume`` finishes it: on the step engine from the blocked step; on Node-RED
and Argo by a new run of the job, whose first call the gateway answers from the stored result.
Either way each step is billed once.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.conformance.test_engines import (  # noqa: F401  (stack: the fixture)
    HOLD,
    ME,
    Stack,
    held,
    stack,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


async def test_a_block_stops_the_job_and_resume_finishes_it_on_every_engine(
    stack: Stack,  # noqa: F811
) -> None:
    outcomes = []
    for engine in ("step", stack.engine):
        job_id = await held(stack, engine)
        name = (await stack.platform.jobs.get(ME, job_id, steps=False)).workflow
        block = await stack.platform.blocks.place(
            ME, kind="workflow", target=name, reason="under review"
        )
        stopped = await stack.finished(job_id)
        assert stopped.status == "blocked", (engine, stopped)
        assert stopped.error is not None
        assert (stopped.error["block_id"], stopped.error["block_reason"]) == (
            block.id,
            "under review",
        )
        assert stopped.error["step"] == "after", (engine, stopped.error)

        await stack.platform.blocks.lift(ME, block.id)
        await stack.platform.job_control.resume(ME, job_id)

        async def succeeded(job_id: str = job_id) -> bool:
            job = await stack.platform.jobs.get(ME, job_id, steps=False)
            assert job.status not in ("failed", "cancelled", "blocked"), job
            return job.status == "succeeded"

        await wait_for(succeeded, f"job {job_id} on {engine} succeeds once resumed")
        outcome = await stack.outcome(await stack.finished(job_id))
        billed = Counter(record["step_id"] for record in outcome["usage"])
        assert billed == Counter({"before": 1, "after": 1}), (engine, outcome["usage"])
        outcomes.append(outcome)
    on_step, on_engine = outcomes
    assert on_step["result"] == {"n": 3}
    for field in ("status", "result", "usage"):
        assert on_engine[field] == on_step[field], field
