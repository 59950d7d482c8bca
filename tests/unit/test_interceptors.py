"""The interceptor chain: order, refusals, and which interceptors each place runs."""

from __future__ import annotations

from typing import Any

import pytest

from fluxo_core.errors import AdmissionDeniedError
from fluxo_core.storage import Transaction
from service_runtime.interceptors import (
    AdmitRequest,
    CallRequest,
    Interceptor,
    InterceptorChain,
    RecordRequest,
    ResultRequest,
)


def call(account: str) -> CallRequest:
    return CallRequest(account, "ada", "echo", "1", None, None, None)


class Recorder(Interceptor):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def admit(self, request: AdmitRequest) -> None:
        self.log.append(f"{self.name}.admit:{[c.account_id for _, c in request.pending()]}")

    def admit_in_transaction(self, request: AdmitRequest, tx: Transaction) -> None:
        self.log.append(f"{self.name}.admit_in_transaction")

    def on_record(self, request: RecordRequest, tx: Transaction) -> None:
        self.log.append(f"{self.name}.on_record")

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        self.log.append(f"{self.name}.on_result")


class Blocks(Interceptor):
    """Refuses the calls of one account; admits only outside a transaction."""

    def __init__(self, account: str) -> None:
        self.account = account

    async def admit(self, request: AdmitRequest) -> None:
        for index, c in request.pending():
            if c.account_id == self.account:
                request.refuse(index, AdmissionDeniedError(f"{self.account} is over its quota"))


class ResultsOnly(Interceptor):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def on_result(self, request: ResultRequest, tx: Transaction) -> None:
        self.log.append("results-only.on_result")


TX: Any = object()  # the hooks under test only pass it on


async def test_each_place_runs_the_interceptors_in_the_chains_order() -> None:
    log: list[str] = []
    chain = InterceptorChain([Recorder("a", log), Recorder("b", log)])
    await chain.admit(AdmitRequest("gateway", [call("acme")]))
    chain.admit_in_transaction(AdmitRequest("worker", [call("acme")]), TX)
    chain.on_result(ResultRequest([], 0.0), TX)
    assert log == [
        "a.admit:['acme']",
        "b.admit:['acme']",
        "a.admit_in_transaction",
        "b.admit_in_transaction",
        "a.on_result",
        "b.on_result",
    ]


async def test_a_refused_call_is_not_pending_for_the_interceptors_after_the_refusal() -> None:
    log: list[str] = []
    chain = InterceptorChain([Recorder("before", log), Blocks("globex"), Recorder("after", log)])
    request = AdmitRequest("gateway", [call("acme"), call("globex"), call("initech")])
    await chain.admit(request)
    assert log == ["before.admit:['acme', 'globex', 'initech']", "after.admit:['acme', 'initech']"]
    assert [r is not None for r in request.refusals] == [False, True, False]
    with pytest.raises(AdmissionDeniedError, match="globex is over its quota"):
        request.raise_refused()


def test_the_first_refusal_of_a_call_is_the_one_kept() -> None:
    request = AdmitRequest("worker", [call("acme")])
    request.refuse(0, AdmissionDeniedError("first"))
    request.refuse(0, AdmissionDeniedError("second"))
    assert [str(r) for r in request.refusals] == ["first"]


async def test_a_place_runs_only_the_interceptors_that_override_its_hook() -> None:
    log: list[str] = []
    chain = InterceptorChain([ResultsOnly(log)])
    assert (chain.admits, chain.records, chain.observes_results) == (False, False, True)
    await chain.admit(AdmitRequest("gateway", [call("acme")]))
    chain.on_result(ResultRequest([], 0.0), TX)
    assert log == ["results-only.on_result"]


def test_a_chain_decides_in_a_transaction_only_if_every_admitting_interceptor_can() -> None:
    log: list[str] = []
    assert InterceptorChain([Recorder("a", log), ResultsOnly(log)]).admits_in_transaction
    assert InterceptorChain([]).admits_in_transaction
    # Blocks admits, but only outside a transaction: the worker must not decide in one.
    assert not InterceptorChain([Recorder("a", log), Blocks("acme")]).admits_in_transaction
