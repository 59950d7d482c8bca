"""Fluxo's top floor: the control plane and the faces it shows.

- ``fluxo.control``: the platform composed from the floors below (storage, runtime, services,
  engines), jobs, admission policy, remote-engine supervision.
- ``fluxo.api``: the HTTP API (aiohttp) and its OpenAPI document.
- ``fluxo.cli``: the ``fluxo`` command.

Nothing below imports from here; the import contracts in ``pyproject.toml`` hold it.
"""
