"""One account's dead letters of a service, and replaying them once the service is fixed.

``fluxo dlq`` (:class:`service_runtime.dead_letters.DeadLetters`) sees every queue of the
platform; a user sees only the dead letters of its own account's calls, and replays only those.
What a replay does, and why the dead letters of job steps stay where they are, is
:mod:`service_runtime.dead_letters`'.

A viewer reads; a member replays (a replay runs and bills the calls again).
"""

from __future__ import annotations

from collections.abc import Sequence

from fluxo.control.auth import require
from fluxo_core.errors import (
    NotFoundError,
    PermissionDeniedError,
    UnsupportedFeatureError,
    ValidationError,
)
from fluxo_core.storage import Database, Principal, Role
from service_runtime.catalog import ServiceInfo
from service_runtime.dead_letters import DeadLetter, DeadLetters, Replay
from service_runtime.transports import Transport

__all__ = ["MAX_LETTERS", "AccountDeadLetters"]

MAX_LETTERS = 100  # listed (and replayed at once) per service


class AccountDeadLetters:
    """The dead letters of the calls an account made of a service, scoped to that account."""

    def __init__(self, db: Database, transport: Transport) -> None:
        # The broker transports keep dead letters outside the database: their own tools
        # replay them (a RabbitMQ shovel), so there is nothing here to list.
        self._letters = (
            DeadLetters(db, transport) if transport.capabilities.transactional_enqueue else None
        )
        self.transport_name = transport.name

    @property
    def supported(self) -> bool:
        """Whether this transport's dead letters are listed and replayed by Fluxo."""
        return self._letters is not None

    async def list(
        self, principal: Principal, service: ServiceInfo, *, limit: int = MAX_LETTERS
    ) -> list[DeadLetter]:
        """The account's dead letters of ``service`` (this version), oldest first."""
        _no_engine(principal)
        if self._letters is None:
            return []
        return await self._letters.list(
            service.input_queue, limit=limit, account_id=principal.account_id
        )

    async def replay(
        self, principal: Principal, service: ServiceInfo, message_ids: Sequence[str]
    ) -> Replay:
        """Send these dead letters of the account's calls of ``service`` through again.

        Raises:
            PermissionDeniedError: a viewer.
            NotFoundError: none of the ids is a dead letter of the account's calls of the
                service (another account's is the same as a missing one).
            UnsupportedFeatureError: the transport's dead letters are the broker's to replay.
        """
        _no_engine(principal)
        require(principal, Role.MEMBER, "replay dead letters")
        if not message_ids:
            raise ValidationError(
                "name the dead letters to replay", problems=[("message_ids", "at least one id")]
            )
        if len(message_ids) > MAX_LETTERS:
            raise ValidationError(
                f"replay at most {MAX_LETTERS} dead letters at once",
                problems=[("message_ids", f"at most {MAX_LETTERS}")],
            )
        if self._letters is None:
            raise UnsupportedFeatureError(
                f"dead-letter replay is done with the broker's own tools for the "
                f"{self.transport_name!r} transport (e.g. a RabbitMQ shovel)"
            )
        owned = await self._letters.list(
            service.input_queue,
            limit=MAX_LETTERS,
            account_id=principal.account_id,
            message_ids=message_ids,
        )
        if not owned:
            raise NotFoundError(
                f"no dead letter {', '.join(sorted(message_ids)[:3])} of service "
                f"{service.ref} in this account"
            )
        return await self._letters.replay(service.input_queue, [m.message_id for m in owned])


def _no_engine(principal: Principal) -> None:
    if principal.engine is not None:
        raise PermissionDeniedError("an engine's token may not read or replay dead letters")
