"""Engine-side names of an account's workflows, shared by the Node-RED and Argo translators.

External engines are shared by every account: one Node-RED holds the tabs of all of them, one
Argo namespace their templates. A workflow's name is unique only inside its account, so every
name a translator gives the engine (Node-RED ids and entry routes, Argo templates, Secrets,
service accounts) carries the account, or two accounts' workflows of the same name would
overwrite each other.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = ["MAX_ACCOUNT_LABEL", "account_label", "digest"]

MAX_ACCOUNT_LABEL: Final = 40
"""Longest :func:`account_label`: leaves room for a prefix (``fluxo-gateway-``) in 63."""

_PLAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def digest(*parts: str, length: int = 10) -> str:
    """``length`` hex digits of the sha256 of ``parts`` (joined by a separator no id contains)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]


def account_label(account: str) -> str:
    """The account as a DNS-1123 label of at most :data:`MAX_ACCOUNT_LABEL` characters, one per
    account: the id itself when it already is such a label without ``--`` (``acme``,
    ``acme-corp``), else its lowercase form cleaned and cut, ``--`` and a hash of the exact id
    (``Acme.Corp`` -> ``acme-corp--8c3b4a1f0e``).

    Distinct accounts get distinct labels: kept ids have no ``--``, changed ones always do, and
    those differ by the hash of the id. Lowercase because Node-RED's routes (Express) and
    Kubernetes names do not tell ``Acme`` from ``acme``; account ids do.
    """
    if len(account) <= MAX_ACCOUNT_LABEL and _PLAIN.match(account) and "--" not in account:
        return account
    clean = re.sub(r"[^a-z0-9]+", "-", account.lower()).strip("-")
    clean = clean[: MAX_ACCOUNT_LABEL - 12].rstrip("-") or "x"
    return f"{clean}--{digest(account)}"
