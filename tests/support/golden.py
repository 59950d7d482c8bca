"""Golden files: compared by default, rewritten only on a developer's request.

``FLUXO_REGENERATE=1`` rewrites the golden files the tests compare against; that is a review
step (look at the diff, then commit it), never something CI may do: a CI run that regenerates
its goldens passes whatever the output is. So the request is refused under ``CI=true``, with an
error that says why and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["RegenerateInCiError", "regenerate_requested"]


class RegenerateInCiError(RuntimeError):
    """FLUXO_REGENERATE=1 was set in CI."""


def regenerate_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether golden files are to be rewritten (``FLUXO_REGENERATE=1``, outside CI).

    Raises:
        RegenerateInCiError: ``FLUXO_REGENERATE=1`` together with ``CI=true``.
    """
    env = os.environ if env is None else env
    if env.get("FLUXO_REGENERATE") != "1":
        return False
    if env.get("CI", "").lower() == "true":
        raise RegenerateInCiError(
            "FLUXO_REGENERATE=1 is refused in CI (CI=true): golden files are regenerated only on "
            "request on a developer's machine, where the diff is reviewed before it is "
            "committed; unset FLUXO_REGENERATE in the CI job, and regenerate locally with "
            "FLUXO_REGENERATE=1 .venv/bin/python -m pytest ..."
        )
    return True
