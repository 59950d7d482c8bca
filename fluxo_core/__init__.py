"""Fluxo's ground floor: the model and its contracts.

``errors``, ``ir`` (the packet, the workflow IR, validation, the bounded document parser),
``config``, ``clock``, ``redaction``, ``engine`` (the engine contract and the one engine registry)
and ``storage`` (tables, migrations, stores). It imports none of the floors above it.
"""
