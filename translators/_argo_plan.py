"""Unfold a workflow's step graph into Argo DAG tasks. Pure.

The step engine moves *tokens*: a step with two predecessors that both deliver runs twice, once
per token (its keys ``mail<review``, ``mail<ship``). An Argo task runs at most once, so the graph is
unfolded along its paths: a step reached over several paths becomes one task per path, named
``<step>-from-<previous task>``. Switches and joins are not tasks: a switch becomes ``when``
conditions of the tasks it routes to, a join becomes the aggregated outputs of its split. A split
is a task that fans out (``withParam``) over a DAG template holding its branch (``branch-<split>``);
the branch template outputs the payload that reaches the join (``payload``) and the payloads that
end the job inside the branch (``results``). The output packets of a service call fan out the
same way (``branch-<step>-outputs``): the step engine routes each packet on its own.

A call whose step handles its errors (``on_error`` ``continue`` or ``goto``) is *guarded*: its task
runs a small DAG around the call that always succeeds and outputs the call's ``status``,
``result`` and ``error`` (see ``_argo_templates``), so the task's successors depend on
``x.Succeeded`` and route on that status with ``when``. Argo fails a DAG when a task skipped or
omitted below a failed task ends a branch (``assessDAGPhase``): a failed call must therefore never
be the task the graph sees.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fluxo_core.errors import UnsupportedFeatureError
from fluxo_core.ir import (
    ENTRIES_LABEL,
    ENTRY_HEADER,
    DelayStep,
    JoinStep,
    NativeStep,
    OnErrorGoto,
    ServiceStep,
    SplitStep,
    SwitchStep,
    TransformStep,
    Workflow,
    WorkflowCallStep,
    merging_steps,
)
from translators._argo_expr import (
    Choice,
    Expr,
    Leaf,
    all_of,
    any_of,
    condition,
    lift,
    literal,
    path_value,
    task_ref,
)

__all__ = [
    "CAME_FROM",
    "INPUT",
    "ITEM",
    "MAX_DEPTH",
    "MAX_UNFOLDED_TASKS",
    "ORIGIN",
    "SUFFIX",
    "Plan",
    "Scope",
    "Task",
    "plan_workflow",
]

SUFFIX = "{{inputs.parameters.suffix}}"
"""Where a branch's item indexes go in a key: ``[i]`` per split level (``.i`` in a packet id)."""

CAME_FROM = "{{inputs.parameters.from}}"
"""In the branch of a 1 -> N call's outputs: the key (in packet-id characters) of the output's
execution, ``<call key>~j`` (``_j``), that a merging step after it names."""

ORIGIN = "{{inputs.parameters.origin}}"
"""In a branch whose split (or 1 -> N call) may run after a merging step or a goto's target: the
origin (in packet-id characters) of the split's execution, which the keys in the branch inherit
(see :mod:`fluxo_core.ir.step_keys`)."""

MAX_DEPTH = 150
"""Argo's default limit on nested template invocations (``MAX_STACK_DEPTH``, since 3.5): each
split and each service call with steps after it adds a DAG level."""

MAX_UNFOLDED_TASKS = 2000
"""A guard against graphs whose paths multiply; Argo's own limit (200 per DAG) is checked later."""

INPUT = Leaf(
    "fromJSON(workflow.parameters.input)", tag="{{workflow.parameters.input}}", is_input=True
)
ITEM = Leaf("fromJSON(inputs.parameters.payload)", tag="{{inputs.parameters.payload}}")

_DEPENDS = {"Succeeded": "Succeeded", "Failed": "Failed", "Error": "Errored", "Skipped": "Skipped"}
OK = ("Succeeded",)


@dataclass(eq=False)
class Task:
    """One DAG task: an execution of ``step`` on one path.

    Attributes:
        kind: ``call`` (service or workflow), ``transform``, ``delay`` or ``split``.
        via: the task before it on its path (names a step reached over several paths).
        depends: an Argo ``depends`` expression, with task placeholders.
        when: the switch conditions on the way here (expr-lang, boolean).
        payload: the payload the task receives.
        branch: for a split, the scope of its branch.
        guarded: a call whose step has ``on_error`` continue or goto: the task always succeeds
            (unless Argo itself fails it) and outputs the call's ``status``, ``result`` and
            ``error``.
        key: the step key of its executions, as the step engine spells it (see
            :mod:`fluxo_core.ir.step_keys`), with :data:`SUFFIX` where a branch's item indexes go.
        origin: what the keys after it inherit: ``key`` from its first ``<`` (with
            :data:`ORIGIN` in a branch that inherits one), empty when it has none.
        outputs_of: for a fan-out over the output packets of a call (a split task of no step
            of the workflow), that call's task: one branch per packet, ``[i]`` in the keys only
            when there are several (as on the step engine).
    """

    uid: int
    step: Any
    kind: str
    scope: Scope
    via: Task | None
    depends: str | None
    when: Expr | None
    payload: Expr
    items: Expr | None = None
    branch: Scope | None = None
    name: str = ""
    guarded: bool = False  # an on_error call, run inside a DAG that always succeeds
    key: str = ""
    origin: str = ""
    outputs_of: Task | None = None  # a fan-out over the output packets of this call task

    @property
    def ref(self) -> str:
        return task_ref(self.uid)


@dataclass(eq=False)
class Scope:
    """One DAG template: ``main`` or a split's branch."""

    template: str
    split: SplitStep | None
    tasks: list[Task] = field(default_factory=list)
    gathers: str = ""  # the step whose branches a join here gathers: the split, or a service step
    came_from: bool = False  # the branch of a call's outputs: its tokens come from `CAME_FROM`
    origin: bool = False  # its keys inherit the origin of the split's execution: `ORIGIN`
    join_edges: list[tuple[Expr, Expr]] = field(default_factory=list)  # (fired, payload)
    results: list[tuple[Expr, Expr, bool]] = field(default_factory=list)  # (fired, value, many)


@dataclass(frozen=True)
class _Edge:
    """A token on its way to a step: its source task, the phases that let it through, guards."""

    source: Task | None
    phases: tuple[str, ...]
    guard: Expr | None
    payload: Expr
    came_from: str | None = None  # the key of the step execution the token comes from
    goto: bool = False  # the token of an on_error goto
    origin: str = ""  # the origin of that execution, which a step that names none inherits

    @property
    def depends(self) -> str | None:
        if self.source is None:
            return None
        parts = [f"{self.source.ref}.{_DEPENDS[p]}" for p in self.phases]
        return parts[0] if len(parts) == 1 else "(" + " || ".join(parts) + ")"

    def fired(self) -> Expr:
        """True when this token was delivered (for outputs, evaluated after the DAG ran)."""
        parts: list[Expr] = []
        if self.source is not None:
            parts.append(Leaf(status_in(self.source, self.phases)))
        if self.guard is not None:
            parts.append(self.guard)
        if not parts:
            return Leaf("true")
        return lift(lambda *texts: all_of(texts), *parts)


def status_in(task: Task, phases: tuple[str, ...]) -> str:
    status = f"tasks['{task.ref}'].status"
    if len(phases) == 1:
        return f"{status} == {literal(phases[0])}"
    return f"{status} in {literal(list(phases))}"


def call_ended(task: Task, *, succeeded: bool) -> str:
    """A guarded task ran and its call succeeded (or failed); safe when the task did not run."""
    test = "==" if succeeded else "!="
    return (
        f"({status_in(task, OK)} && "
        f"tasks['{task.ref}'].outputs.parameters.status {test} 'Succeeded')"
    )


def call_outputs(task: Task) -> Leaf:
    """Every payload a call task produced, as a list (the branches of a join that gathers them,
    or of the steps after it)."""
    result = "outputs.parameters.result" if task.guarded else "outputs.result"
    return Leaf(f"map(fromJSON(tasks['{task.ref}'].{result}).result, #.payload)")


def call_output(task: Task) -> Leaf:
    """The payload a call task produced: its one result packet's payload, or the list of them."""
    result = "outputs.parameters.result" if task.guarded else "outputs.result"
    return Leaf(
        f"(let r = fromJSON(tasks['{task.ref}'].{result}).result; "
        "[get(get(r, 0), 'payload'), map(r, #.payload)][min(len(r), 2) - 1])"
    )


@dataclass
class Plan:
    """Every scope of a workflow, ``main`` first."""

    workflow: Workflow
    main: Scope
    branches: list[Scope]
    entries: list[str] = field(default_factory=list)
    """Steps a job may begin at besides the start step (its ``fluxo-entry`` header)."""

    def scopes(self) -> Iterator[Scope]:
        yield self.main
        yield from self.branches


class _Planner:
    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.name = workflow.metadata.name
        self.steps = workflow.spec.steps_by_id()
        self.output = workflow.spec.output
        self.join_of = {s.split: s for s in workflow.spec.steps if isinstance(s, JoinStep)}
        self.merging = merging_steps(workflow.spec.steps)
        self.inheriting = _after_origins(self.steps, self.merging)
        self.joined = _joined_steps(self.steps)
        self.branches: dict[str, Scope] = {}
        self.count = 0

    def plan(self) -> Plan:
        main = Scope("main", None)
        start = self.workflow.spec.start_id
        entries = self.entries()
        if not entries:
            self.visit(main, start, _Edge(None, (), None, INPUT))
        else:
            # A job names its entry in a header: each entry is a start of its own, and the
            # start step runs only for a job that names none (or names it), as on the step
            # engine. The steps below are unfolded once per start (only one of them runs).
            self.visit(main, start, _Edge(None, (), Leaf(_entry_named(None, start)), INPUT))
            for entry in entries:
                self.visit(main, entry, _Edge(None, (), Leaf(_entry_named(entry, start)), INPUT))
        depth = _depth(main, {})
        if depth > MAX_DEPTH:
            raise UnsupportedFeatureError(
                f"workflow {self.name!r} nests {depth} Argo templates, over Argo's limit of "
                f"{MAX_DEPTH}: each split and each service step with steps after it runs the rest "
                "of its path one level deeper (one branch per item or output packet); split the "
                "workflow into workflows called as services",
                workflow=self.name,
            )
        return Plan(self.workflow, main, list(self.branches.values()), entries)

    def entries(self) -> list[str]:
        """The entries a job may name in its ``fluxo-entry`` header: the steps the start step
        leads to, in a workflow labelled with them (imported from a tab with several triggers).
        Any other workflow starts at its start step only."""
        if not self.workflow.metadata.labels.get(ENTRIES_LABEL):
            return []
        start = self.steps[self.workflow.spec.start_id]
        return list(dict.fromkeys(getattr(start, "next", None) or []))

    def key(self, scope: Scope, step: Any, edge: _Edge) -> tuple[str, str]:
        """The key of the execution of ``step`` that ``edge`` starts, as the step engine makes
        it, and its origin: a step with several predecessors (not a join), or reached by a
        goto, names the execution the token comes from; another inherits its origin."""
        if edge.came_from is not None and edge.goto:
            return f"{step.id}<{edge.came_from}", f"<{edge.came_from}"
        base = str(step.id) + (SUFFIX if scope.split is not None else "")
        if edge.came_from is not None and step.id in self.merging:
            return f"{base}<{edge.came_from}", f"<{edge.came_from}"
        return base + edge.origin, edge.origin

    def new_task(self, scope: Scope, step: Any, kind: str, edge: _Edge) -> Task:
        self.count += 1
        if self.count > MAX_UNFOLDED_TASKS:
            raise UnsupportedFeatureError(
                f"workflow {self.name!r} unfolds into more than {MAX_UNFOLDED_TASKS} Argo tasks "
                "(steps reached over many paths run once per path); join the parallel paths "
                "earlier or run the workflow on the step engine",
                workflow=self.name,
            )
        task = Task(
            self.count, step, kind, scope, edge.source, edge.depends, edge.guard, edge.payload
        )
        task.key, task.origin = self.key(scope, step, edge)
        scope.tasks.append(task)
        return task

    def visit(self, scope: Scope, step_id: str, edge: _Edge) -> None:
        step = self.steps[step_id]
        if isinstance(step, NativeStep):
            raise UnsupportedFeatureError(
                f"step {step.id!r} of workflow {self.name!r} is a native {step.engine} step, "
                "which only its own engine can run; replace it with portable steps (service, "
                "switch, transform, ...) to run the workflow on Argo",
                step=step.id,
                kind="native",
                workflow=self.name,
            )
        if not isinstance(step, ServiceStep | WorkflowCallStep | TransformStep):
            self.check_on_error(step)
        if isinstance(step, ServiceStep) and step.param_expressions:
            name = next(iter(step.param_expressions))
            raise UnsupportedFeatureError(
                f"step {step.id!r} of workflow {self.name!r}: with.{name} is a JSONata "
                "expression, which cannot run on the argo engine (its templates evaluate "
                "expr-lang); give it a static value, compute the field in a transform step "
                "before this one, or run the workflow on the step or nodered engine",
                step=step.id,
                kind="service",
                engine="argo",
                workflow=self.name,
            )
        if isinstance(step, JoinStep):
            self.reach_join(scope, step, edge)
        elif isinstance(step, SwitchStep):
            key, origin = self.key(scope, step, edge)
            for target, guard in self.switch_guards(step, edge.payload):
                both = guard if edge.guard is None else lift(_and, edge.guard, guard)
                token = _Edge(edge.source, edge.phases, both, edge.payload, key, origin=origin)
                self.visit(scope, target, token)
        elif isinstance(step, SplitStep):
            self.split(scope, step, edge)
        elif isinstance(step, DelayStep):
            task = self.new_task(scope, step, "delay", edge)
            self.route(
                scope, step, _Edge(task, OK, None, edge.payload, task.key, origin=task.origin)
            )
        else:
            kind = "transform" if isinstance(step, TransformStep) else "call"
            task = self.new_task(scope, step, kind, edge)
            task.guarded = step.on_error != "fail"
            self.call_edges(scope, step, task, edge.payload)

    def call_edges(self, scope: Scope, step: Any, task: Task, received: Expr) -> None:
        output: Expr = call_output(task)
        on_error = step.on_error
        key, origin = task.key, task.origin
        if step.id in self.join_of:
            self.gathered_outputs(scope, step, task)
            return
        # The packets of a service call go on one by one, as on the step engine; a call between
        # a split and its join hands on its one packet (the join pairs it with the item).
        fans_out = isinstance(step, ServiceStep) and step.id not in self.joined
        if not task.guarded:
            if fans_out:
                edge = _Edge(task, OK, None, call_outputs(task), key, origin=origin)
                self.fan_out_outputs(scope, step, edge)
            else:
                self.route(scope, step, _Edge(task, OK, None, output, key, origin=origin))
            return
        # A guarded task succeeds whatever its call did: route on the call's status. The next
        # steps get the call's output or, when it failed, the step's input: `continue` hands that
        # on, and after `goto` it keeps the arguments of the skipped next steps evaluable.
        succeeded = call_ended(task, succeeded=True)
        handed_on = Choice(succeeded, output, received)
        guard = None if on_error == "continue" else Leaf(succeeded)
        if fans_out:
            packets = Choice(succeeded, call_outputs(task), lift(lambda e: f"[{e}]", received))
            self.fan_out_outputs(scope, step, _Edge(task, OK, guard, packets, key, origin=origin))
        else:
            self.route(scope, step, _Edge(task, OK, guard, handed_on, key, origin=origin))
        if isinstance(on_error, OnErrorGoto):
            error = f"fromJSON(tasks['{task.ref}'].outputs.parameters.error)"
            failed = lift(
                lambda e: f"{{ 'error': {error}, 'input': {e}, 'step': {literal(step.id)} }}",
                received,
            )
            guard = Leaf(call_ended(task, succeeded=False))
            self.visit(scope, on_error.goto, _Edge(task, OK, guard, failed, key, goto=True))

    def route(self, scope: Scope, step: Any, edge: _Edge) -> None:
        """``step`` produced ``edge.payload``: a job result if it is the output, then ``next``."""
        if self.output == step.id or (self.output is None and not step.next):
            scope.results.append((edge.fired(), edge.payload, False))
        for target in step.next:
            self.visit(scope, target, edge)

    def switch_guards(self, step: SwitchStep, payload: Expr) -> list[tuple[str, Expr]]:
        tests = [condition(case.when, "p", step.id) for case in step.cases]
        chosen: dict[str, list[str]] = {}
        for i, case in enumerate(step.cases):
            earlier = [f"!({t})" for t in tests[:i]] if step.mode == "first" else []
            for target in case.next:
                chosen.setdefault(target, []).append(all_of([*earlier, tests[i]]))
        for target in step.default:
            chosen.setdefault(target, []).append(all_of([f"!({t})" for t in tests]))
        return [(target, _bind_payload(payload, any_of(ors))) for target, ors in chosen.items()]

    def split(
        self,
        scope: Scope,
        step: SplitStep,
        edge: _Edge,
        *,
        gathers: str = "",
        outputs_of: Task | None = None,
    ) -> None:
        gathers = gathers or step.id
        task = self.new_task(scope, step, "split", edge)
        task.items = lift(lambda p: path_value(p, step.path), edge.payload)
        task.outputs_of = outputs_of
        branch = self.branches.get(step.id)
        if branch is None:
            came_from = outputs_of is not None
            # One template for every execution of the split: its origin, when it may have one,
            # is a parameter (the step the split or the call's outputs belong to tells).
            inherits = (outputs_of.step.id if outputs_of else step.id) in self.inheriting
            branch = Scope(
                f"branch-{step.id}", step, gathers=gathers, came_from=came_from, origin=inherits
            )
            self.branches[step.id] = branch
            for target in step.next:
                token = _Edge(
                    None,
                    (),
                    None,
                    ITEM,
                    CAME_FROM if came_from else None,
                    origin=ORIGIN if inherits else "",
                )
                self.visit(branch, target, token)
        task.branch = branch
        if branch.results:
            # Each branch's results, one after the other: expr-lang's flatten goes all the way
            # down, so a result that is itself an array (a service may answer a list of
            # objects) is boxed while the branches' lists are flattened, as on the step engine.
            gathered = (
                f"map(flatten(map(fromJSON(tasks['{task.ref}'].outputs.parameters), "
                "map(fromJSON(#.results), ({'r': #})))), #.r)"
            )
            scope.results.append((Leaf(status_in(task, OK)), Leaf(gathered), True))
        join = self.join_of.get(gathers)
        if join is None:
            return
        joined = Choice(
            status_in(task, ("Skipped",)),  # an empty list: Argo skips the task, the join gets []
            Leaf("[]"),
            Leaf(
                f"flatten(filter(map(fromJSON(tasks['{task.ref}'].outputs.parameters), "
                "fromJSON(#.payload)), # != nil))"
            ),
        )
        # A split skipped by its own `when` must not let the join through: repeat its guard.
        gathered_key = join.id + (SUFFIX if scope.split is not None else "") + task.origin
        to_join = _Edge(
            task, ("Succeeded", "Skipped"), edge.guard, joined, gathered_key, origin=task.origin
        )
        self.route(scope, join, to_join)

    def fan_out_outputs(self, scope: Scope, step: ServiceStep, edge: _Edge) -> None:
        """Each packet of ``edge.payload`` (a list: the call's output packets, or its input
        when ``on_error: continue`` hands that on) goes on on its own, as on the step engine:
        the steps after ``step`` run in a branch (``branch-<step>-outputs``) looped over them,
        keyed ``[i]`` (and from ``<key>~i``) when there are several, unchanged when there is
        one; no packet ends the path. As a job result, each packet is one."""
        if self.output == step.id or (self.output is None and not step.next):
            scope.results.append((edge.fired(), edge.payload, True))
        if not step.next or edge.source is None:
            return
        # Not a step of the workflow: the fan-out of the call's packets (named after it).
        fan_out = SplitStep.model_construct(
            id=f"{step.id}-outputs", kind="split", path=None, next=list(step.next), name=None
        )
        self.split(scope, fan_out, edge, outputs_of=edge.source)

    def gathered_outputs(self, scope: Scope, step: ServiceStep, task: Task) -> None:
        """A join gathers the output packets of ``step``: fan out over them as over a split's
        items (one branch per packet, in the order the service returned them)."""
        if task.guarded:
            raise UnsupportedFeatureError(
                f"step {step.id!r} of workflow {self.name!r}: a join gathers its outputs, and on "
                "Argo such a step cannot also handle its errors; remove on_error from it",
                step=step.id,
                kind="service",
                workflow=self.name,
            )
        # Not a step of the workflow: the fan-out of the call's packets (named after it).
        fan_out = SplitStep.model_construct(
            id=f"{step.id}-outputs", kind="split", path=None, next=list(step.next), name=None
        )
        edge = _Edge(task, OK, None, call_outputs(task), task.key, origin=task.origin)
        self.split(scope, fan_out, edge, gathers=step.id)

    def reach_join(self, scope: Scope, step: JoinStep, edge: _Edge) -> None:
        if scope.split is None or scope.gathers != step.split:
            raise UnsupportedFeatureError(
                f"join {step.id!r} of workflow {self.name!r} is reached from outside the branch "
                f"of split {step.split!r}; on Argo a join gathers only its split's branches: "
                "route every path into the join through the split",
                step=step.id,
                kind="join",
                workflow=self.name,
            )
        scope.join_edges.append((edge.fired(), edge.payload))

    def check_on_error(self, step: Any) -> None:
        if step.on_error != "fail":
            raise UnsupportedFeatureError(
                f"step {step.id!r} of workflow {self.name!r} is a {step.kind} step with "
                f"on_error {step.on_error!r}; on Argo only service, workflow and transform steps "
                "handle their errors: remove on_error from this step",
                step=step.id,
                kind=step.kind,
                workflow=self.name,
            )


def _successors(step: Any) -> list[str]:
    """The steps ``step`` hands its packet to, an on_error goto's target included."""
    if isinstance(step, SwitchStep):
        targets = [t for case in step.cases for t in case.next] + list(step.default)
    else:
        targets = list(getattr(step, "next", []))
    if isinstance(step.on_error, OnErrorGoto):
        targets.append(step.on_error.goto)
    return list(dict.fromkeys(targets))


def _reach(steps: Mapping[str, Any], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in _successors(steps[todo.pop()]):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _after_origins(steps: Mapping[str, Any], merging: set[str]) -> set[str]:
    """The steps whose keys may have an origin: merging steps, goto targets and the steps
    after them (the others' keys never hold a ``<``)."""
    gotos = {s.on_error.goto for s in steps.values() if isinstance(s.on_error, OnErrorGoto)}
    found: set[str] = set()
    for start in sorted(merging | gotos):
        if start in steps and start not in found:
            found |= _reach(steps, start)
    return found


def _joined_steps(steps: Mapping[str, Any]) -> set[str]:
    """The steps on a path from a split (or a gathered call) to its join, after it: their
    packets are paired with the items by the join, so their calls do not fan out."""
    inside: set[str] = set()
    for join in steps.values():
        if isinstance(join, JoinStep) and join.split in steps:
            after = _reach(steps, join.split) - {join.split, join.id}
            inside |= {s for s in after if join.id in _reach(steps, s)}
    return inside


def _depth(scope: Scope, known: dict[int, int]) -> int:
    """How deep the templates a scope's DAG invokes go: its own level, the call (through its
    ``try-`` DAG when guarded) or the deepest branch below."""
    if id(scope) not in known:
        below = [2 if task.guarded else 1 for task in scope.tasks if task.kind != "split"]
        below += [_depth(task.branch, known) for task in scope.tasks if task.branch is not None]
        known[id(scope)] = 1 + max(below, default=0)
    return known[id(scope)]


def _entry_named(entry: str | None, start: str) -> str:
    """Whether the job's ``fluxo-entry`` header names ``entry`` (None: names none, or the
    start step itself)."""
    headers = "fromJSON(workflow.parameters.headers)"
    named = f"{headers}[{literal(ENTRY_HEADER)}]"
    if entry is not None:
        return f"({literal(ENTRY_HEADER)} in {headers} && {named} == {literal(entry)})"
    return f"({literal(ENTRY_HEADER)} not in {headers} || {named} == {literal(start)})"


def _and(a: str, b: str) -> str:
    return all_of([a, b])


def _bind_payload(payload: Expr, test: str) -> Expr:
    """``test`` (over ``p``) with ``p`` bound to the payload."""
    return lift(lambda p: f"(let p = {p}; {test})", payload)


def plan_workflow(workflow: Workflow) -> Plan:
    """Unfold ``workflow`` into scopes of tasks (names not yet assigned).

    Raises:
        UnsupportedFeatureError: a step Argo cannot run (native steps, JSONata conditions, ...),
            naming the step.
    """
    return _Planner(workflow).plan()
