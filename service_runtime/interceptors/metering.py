"""Metering: what each call costs, written to the usage ledger exactly once.

A succeeded call is charged as its service's :class:`~service_runtime.sdk.Price` in force says
(the worker hands in the service under the platform's applied terms, see
:mod:`service_runtime.terms`, so a Service resource's price overrides the code's), by one
usage record written in the same transaction as the call's result and its inbox row. A message
delivered twice (or again after a crash between commit and ack) finds its inbox row and is
applied with no new effect, so it is never charged twice; a run whose transaction rolled back
wrote no charge either.

Calls that did not succeed are charged only as the service's price policy says (by default
not at all): a call that failed for good (``bill_failed``), each attempt that failed and was
retried (``bill_retried``: one record per attempt number, written with the retry), a call
refused because its job was cancelled (``bill_cancelled``). Each costs the per-call price.
Other refusals of admission (a blocked account, a failed job) cost nothing.
"""

from __future__ import annotations

from fluxo_core.errors import AdmissionDeniedError
from fluxo_core.storage import Transaction, UsageLedger, UsageRecord
from service_runtime.interceptors._base import CallResult, Interceptor, ResultRequest

__all__ = ["Metering", "outcome_of"]


class Metering(Interceptor):
    """Writes one usage record per charged call, in the transaction that applies it."""

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        now = request.now
        records = []
        for r in request.results:
            if r.status == "succeeded":
                records.append(self.usage(r, now))
                continue
            outcome = outcome_of(r)
            if outcome is not None and r.service.price.bills(outcome):
                records.append(self.unsuccessful(r, outcome, now))
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

    @staticmethod
    def unsuccessful(result: CallResult, outcome: str, now: float) -> UsageRecord:
        """The record of a call (or a retried attempt) its price policy bills: the per-call
        price, one unit. A retried attempt's record carries its attempt number, so each attempt
        is charged once and apart from the call's final outcome (attempt 0)."""
        packet, svc = result.packet, result.service
        price = svc.price.per_call_micros
        return UsageRecord(
            packet.id,
            packet.account_id,
            packet.actor.user.id,
            svc.name,
            svc.version,
            packet.job_id,
            packet.step_id,
            1,
            price,
            price,
            svc.price.currency,
            now,
            outcome,
            result.attempt if outcome == "retried" else 0,
        )


def outcome_of(result: CallResult) -> str | None:
    """What a call that did not succeed counts as for billing: ``retried``, ``cancelled``
    (refused: its job was cancelled), ``failed``; ``None`` for other refusals of admission."""
    if result.status == "retrying":
        return "retried"
    error = result.error
    if isinstance(error, AdmissionDeniedError):
        return "cancelled" if error.context.get("reason") == "job_cancelled" else None
    return "failed"
