"""Which hosts a trigger may connect to: the platform's host policy, as for outbound HTTP.

A Trigger names the IMAP server or the broker it reads (``spec.email.host``,
``spec.queue.host``), and whoever may apply a Trigger chooses it: without a check, a trigger
could make Fluxo connect to the cloud metadata endpoint, to a database on loopback or to any
private address, and report what answered in its health. So the hosts pass the same
:class:`~services.http.policy.HostPolicy` the ``http`` service and the outbound services use
(``FLUXO_HTTP_ALLOW``, ``FLUXO_HTTP_DENY``: internal addresses are refused unless allowed):

- when the trigger is applied (:func:`refuse_internal_hosts`): a host the policy refuses is a
  422 naming the field and the setting to change; a name that does not resolve now is let
  through, since the connection checks again;
- at every connection (:func:`connect_address`): the name is resolved and every address vetted
  then, so a name that resolved to a public address at apply and to an internal one later (DNS
  rebinding) is refused. Without TLS the connection goes to the vetted address itself. With TLS
  it goes to the name, since the certificate is checked against the name (an address would fail
  it): a rebound internal server cannot prove that name, so the handshake fails before anything
  but a ClientHello was sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fluxo_core.errors import ServiceError, ValidationError

if TYPE_CHECKING:
    from services.http.policy import HostPolicy

__all__ = ["connect_address", "refuse_internal_hosts", "trigger_endpoint"]


def trigger_endpoint(spec: dict[str, Any]) -> tuple[str, str, int] | None:
    """Where a trigger connects: ``(field, host, port)``, or None for types that connect
    nowhere (cron, webhook, sms, Fluxo service outputs)."""
    if spec.get("type") == "email":
        email = spec["email"]
        return "spec.email.host", str(email["host"]), int(email["port"])
    if spec.get("type") == "queue" and spec["queue"].get("source") in ("rabbitmq", "mqtt"):
        queue = spec["queue"]
        if queue.get("port"):
            port = int(queue["port"])
        elif queue["source"] == "rabbitmq":
            port = 5671 if queue.get("tls") else 5672
        else:
            port = 8883 if queue.get("tls") else 1883
        return "spec.queue.host", str(queue["host"]), port
    return None


async def refuse_internal_hosts(policy: HostPolicy, spec: dict[str, Any]) -> None:
    """Refuse a trigger whose host the policy refuses (when it is applied).

    Raises:
        ValidationError: the field, the host and why, with the setting that would allow it.
    """
    endpoint = trigger_endpoint(spec)
    if endpoint is None:
        return
    where, host, port = endpoint
    try:
        await policy.vet(host, port)
    except ServiceError as exc:
        if "setting" not in exc.context:
            return  # not resolvable now (a typo, or DNS away): the connection reports it
        raise ValidationError(
            f"{where}: {exc.message}",
            problems=[(where, exc.message)],
            host=host,
            setting=exc.context["setting"],
        ) from None


async def connect_address(policy: HostPolicy, host: str, port: int, *, tls: bool) -> str:
    """What to connect to for ``host``: a vetted address, or the name itself over TLS (see the
    module docstring).

    Raises:
        ServiceError: the policy refuses the host or one of its addresses, or it does not
            resolve.
    """
    addresses = await policy.vet(host, port)
    return host if tls else str(addresses[0])
