"""Node-RED's ``file``/``file in`` nodes on the step engine: the account's virtual file store.

A native ``file``/``file in`` step gets the file its node names for the message
(:func:`nodered_semantics.files.file_target`) in its call (``files``), read in the transaction
that makes the call; the version it read rides in the step's state (:data:`FILES_READ_KEY`).
What a ``file`` node writes comes back from the ``nodered-node`` service as the packet on port
:data:`~nodered_semantics.files.FILES_PORT`, and the transaction that takes the call's result
applies it with the step's outcome: once, however often the call is delivered; nothing when the
step fails. A delete of a file changed since it was read runs the node again (as context
writes do, :mod:`engines.step._context`). See :mod:`fluxo_core.storage.nodered_files` for the
store and its bounds.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Mapping
from typing import Any

from fluxo_core.errors import ValidationError
from fluxo_core.ir import NativeStep
from fluxo_core.storage import Transaction
from fluxo_core.storage.nodered_files import NodeRedFileStore
from nodered_semantics.files import FILE_TYPES, file_target, virtual_path

__all__ = ["FILES_READ_KEY", "StepFiles", "is_file_step"]

FILES_READ_KEY = "nr_files"  # in a step's state: the version of the file its call read


def is_file_step(step: Any) -> bool:
    return isinstance(step, NativeStep) and step.config.get("type") in FILE_TYPES


class StepFiles:
    """The account's file store as one job's transitions use it, in their transaction."""

    def __init__(self, store: NodeRedFileStore, tx: Transaction, account_id: str) -> None:
        self.store = store
        self.tx = tx
        self.account_id = account_id

    def load(
        self, step: NativeStep, msg: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """The file the step's node names for ``msg`` as its call gets it, and its version."""
        path = file_target(step.config, msg)
        if path is None:
            return {}, {}
        contents = step.config.get("type") == "file in"
        state = self.store.read(self.tx, self.account_id, [path], contents=contents)[path]
        view = {path: state.as_json()}
        parent = posixpath.dirname(path)
        if parent != path:  # where a file node writes: its directory, as it is
            view[parent] = self.store.read(self.tx, self.account_id, [parent], contents=False)[
                parent
            ].as_json()
        return view, {path: state.version}

    def save(self, step: NativeStep, ops: list[Mapping[str, Any]]) -> bool:
        """Apply what the step's node wrote; False (nothing written) when a file it expects at
        the version it read changed since."""
        checked = []
        for op in ops:
            path, kind = str(op.get("path")), op.get("op")
            if kind not in ("write", "append", "delete", "mkdir") or virtual_path(path) != path:
                raise ValidationError(
                    f"step {step.id!r}: its node wrote an unusable file operation "
                    f"({kind!r} on {path!r})",
                    step=step.id,
                )
            item: dict[str, Any] = {"path": path, "op": kind, "expected": op.get("expected")}
            if kind in ("write", "append"):
                item["data"] = base64.b64decode(str(op.get("data") or ""))
            checked.append(item)
        return self.store.apply(self.tx, self.account_id, checked)
