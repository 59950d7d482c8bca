"""``fluxo get`` and ``fluxo describe`` output, golden-tested: resources applied on a
:class:`~fluxo_core.clock.ManualClock`, rendered at a fixed time, on SQLite and PostgreSQL.

``FLUXO_REGENERATE=1`` rewrites the files in ``tests/golden/resources`` (review the diff).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fluxo.cli._resources import render_describe, render_table
from fluxo.control.platform import Platform
from fluxo_core.clock import ManualClock
from fluxo_core.storage import Database, Principal
from tests.support import services as svc
from tests.support.golden import regenerate_requested

pytestmark = pytest.mark.timeout(60)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "resources"
ACME = Principal(account_id="acme", user_id="ada")
ADMIN = Principal(account_id="default", user_id="admin")


def _doc(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "fluxo.dev/v1",
        "kind": kind,
        "metadata": {"name": name, **meta},
        "spec": spec,
    }


@pytest.fixture
async def rendered(db: Database) -> AsyncIterator[dict[str, str]]:
    """Every rendering, by golden file name, of one history of applies on a manual clock."""
    clock = ManualClock()  # 2027-01-15T08:00:00Z
    platform = Platform(db, svc.SERVICES, workers=1, clock=clock)
    for account in ("default", "acme"):
        await platform.accounts.ensure_account(account)
    async with platform:
        resources = platform.resources
        steps = [
            {"id": "parse", "kind": "service", "service": "echo", "next": ["fan"]},
            {"id": "fan", "kind": "service", "service": "fan-out"},
        ]
        await resources.apply(
            ACME, _doc("Workflow", "order-intake", {"steps": steps}, labels={"team": "ops"})
        )
        clock.advance(90)
        await resources.apply(
            ACME,
            _doc("Workflow", "on-nodered", {"engine": "nodered", "steps": steps[1:]}),
        )
        await resources.apply(
            ACME, _doc("Quota", "monthly", {"kind": "spend", "limit": "25.50", "period": "month"})
        )
        clock.advance(3 * 3600)
        # A new generation of the first workflow: version 2, same resource.
        await resources.apply(
            ACME,
            _doc(
                "Workflow",
                "order-intake",
                {"steps": [{"id": "parse", "kind": "service", "service": "echo"}]},
                labels={"team": "ops"},
            ),
        )
        await resources.apply(
            ACME,
            _doc(
                "Trigger",
                "nightly",
                {"workflow": "order-intake", "type": "cron", "schedule": "0 2 * * *"},
            ),
        )
        await resources.apply(
            ADMIN,
            _doc("Service", "echo", {"price": {"perCall": "0.002", "perItem": "0.0001"}}),
        )
        clock.advance(45 * 60 + 17)
        now = clock.time()
        yield {
            "get-workflows.txt": render_table(await resources.list(ACME, "wf"), now),
            "get-quotas.txt": render_table(await resources.list(ACME, "quotas"), now),
            "get-triggers.txt": render_table(await resources.list(ACME, "trigger"), now),
            "get-services.txt": render_table(await resources.list(ADMIN, "services"), now),
            "describe-workflow.txt": render_describe(
                await resources.get(ACME, "workflow", "order-intake"), now
            ),
            "describe-failing-workflow.txt": render_describe(
                await resources.get(ACME, "workflow", "on-nodered"), now
            ),
            "describe-quota.txt": render_describe(
                await resources.get(ACME, "quota", "monthly"), now
            ),
            "describe-service.txt": render_describe(
                await resources.get(ADMIN, "service", "echo"), now
            ),
        }


async def test_get_and_describe_print_as_the_golden_files(rendered: dict[str, str]) -> None:
    regenerate = regenerate_requested()
    for name, text in rendered.items():
        path = GOLDEN / name
        if regenerate:
            path.write_text(text)
        assert path.read_text() == text, f"{name} differs (FLUXO_REGENERATE=1 rewrites it)"
