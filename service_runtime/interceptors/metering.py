"""Metering: what each call costs, written to the usage ledger exactly once.

A succeeded call is charged as its service's :class:`~service_runtime.sdk.Price` says, by one
usage record written in the same transaction as the call's result and its inbox row. A message
delivered twice (or again after a crash between commit and ack) finds its inbox row and is
applied with no new effect, so it is never charged twice; a run whose transaction rolled back
wrote no charge either. Failed calls and retried attempts cost nothing.
"""

from __future__ import annotations

from fluxo_core.storage import Transaction, UsageLedger, UsageRecord
from service_runtime.interceptors._base import CallResult, Interceptor, ResultRequest

__all__ = ["Metering"]


class Metering(Interceptor):
    """Writes one usage record per succeeded call, in the transaction that applies it."""

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        now = request.now
        records = [self.usage(r, now) for r in request.results if r.status == "succeeded"]
        UsageLedger.record(tx, records)

    @staticmethod
    def usage(result: CallResult, now: float) -> UsageRecord:
        """The usage record of a succeeded call: units and amount from the service's price."""
        packet, svc = result.packet, result.service
        # A list payload is one packet of N items; a per-item price counts the items.
        items = sum(len(p) if isinstance(p, list) else 1 for p in result.outputs)
        units, unit_price, amount = svc.price.charge(items)
        # Positional, in UsageRecord's field order: keywords cost more, once per call.
        return UsageRecord(
            packet.id,
            packet.account_id,
            packet.actor.user.id,
            svc.name,
            svc.version,
            packet.job_id,
            packet.step_id,
            units,
            unit_price,
            amount,
            svc.price.currency,
            now,
        )
