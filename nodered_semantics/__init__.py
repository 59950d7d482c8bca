"""Node-RED's semantics, in one place for every floor that needs them.

The translator (reading and writing flows), the ``nodered-node`` built-in service (running a node
on one message) and the step engine (refusing a flow it cannot run faithfully) all follow what
Node-RED 4 does. What they share lives here, pure (no I/O; it imports only the model and
libraries), so that the translators may import it and an engine needs no service for it:

* :mod:`~nodered_semantics.js`: JavaScript values (``String()``, ``Number()``, loose and strict
  equality, relational comparison, ``JSON.stringify``) and regular expressions;
* :mod:`~nodered_semantics.msg_paths`: message property paths (``payload.a[0]["b c"]``,
  ``payload[msg.topic]``) read and written as ``RED.util`` does, and their static form as keys;
* :mod:`~nodered_semantics.jsonata`: JSONata with Node-RED's bindings (``msg``, ``$env``,
  ``$clone``), and which expressions need Node-RED's own functions;
* :mod:`~nodered_semantics.typed_values`: typed inputs (``RED.util.evaluateNodeProperty``);
* :mod:`~nodered_semantics.support`: which node kinds run outside Node-RED
  (:func:`~nodered_semantics.support.node_problem`), how a rule node's configuration reads, and
  the name of the service that runs them.
"""
