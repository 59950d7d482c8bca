"""The printable HTML page of an invoice (one jinja2 template, autoescaped).

The page prints to a clean PDF in Chromium (``chromium --headless --print-to-pdf``): A4
margins in ``@page``, table headers repeated on each page, rows never split.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2

from fluxo.control.billing import invoice_json
from fluxo_core.storage import InvoiceLines

__all__ = ["invoice_html"]


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fluxo.api", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("invoice.html")


def invoice_html(invoice: InvoiceLines) -> str:
    """The invoice as one self-contained HTML page."""
    doc: dict[str, Any] = invoice_json(invoice)
    heading = f"Invoice {doc['number']}" if doc["number"] else f"Draft invoice {doc['period']}"
    return _template().render(invoice=doc, heading=heading, title=f"{heading} - {doc['account']}")
