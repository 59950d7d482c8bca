"""The HTTP faces of Fluxo: REST API, webhooks and the gateway endpoint (aiohttp)."""

from fluxo.api.app import create_app

__all__ = ["create_app"]
