"""Benchmark of the function-node sandbox: calls per second on a trivial body.

``in_process_calls_per_s``: :func:`run_function` in this process (QuickJS alone, a fresh context
per call). ``sandbox_calls_per_s``: :class:`FunctionSandbox` with one child process, one caller
(what each call pays for process isolation: the round trip to the child and back).
``sandbox_parallel_calls_per_s``: the same sandbox with 2 children and 2 caller threads. Each
figure is the best of 3 rounds, after a warm-up that starts the children.

Prints progress to stderr, then as its last line one JSON object with the figures.

    .venv/bin/python -m bench.function_sandbox [--calls 3000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bench.runtime import log
from services.nodered.function import FunctionSandbox, run_function

NODE = {"id": "bench", "type": "function", "func": "msg.payload.n += 1;\nreturn msg;"}


def best_rate(calls: int, run: Callable[[int], None], rounds: int = 3) -> float:
    """The best of ``rounds`` rates of ``run(calls)`` in calls per second."""
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        run(calls)
        best = max(best, calls / (time.perf_counter() - started))
    return best


def in_process(calls: int) -> None:
    for i in range(calls):
        run_function(NODE, {"payload": {"n": i}})


def sandboxed(sandbox: FunctionSandbox, threads: int) -> Callable[[int], None]:
    def one_thread(count: int) -> None:
        for i in range(count):
            sandbox.run(NODE, {"payload": {"n": i}})

    def run(calls: int) -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one_thread, [calls // threads] * threads))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    figures["in_process_calls_per_s"] = round(best_rate(args.calls, in_process))
    log(f"in process: {figures['in_process_calls_per_s']:.0f} calls/s")
    for name, processes in (("sandbox_calls_per_s", 1), ("sandbox_parallel_calls_per_s", 2)):
        sandbox = FunctionSandbox(processes=processes)
        try:
            sandboxed(sandbox, processes)(processes * 20)  # warm-up: start the children
            figures[name] = round(best_rate(args.calls, sandboxed(sandbox, processes)))
        finally:
            sandbox.close()
        log(f"{name}: {figures[name]:.0f} calls/s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
