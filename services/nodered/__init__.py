"""The ``nodered-node`` built-in service: one Node-RED node run on one message.

* :mod:`~services.nodered.service`: the service entry (payload in and out) and
  :func:`~services.nodered.service.run_node`, which dispatches on the node kind;
* one module per node kind, each as its Node-RED 4 implementation behaves:
  :mod:`~services.nodered.function` (JavaScript in a QuickJS sandbox),
  :mod:`~services.nodered.change`, :mod:`~services.nodered.switch`,
  :mod:`~services.nodered.range`, :mod:`~services.nodered.sort`,
  :mod:`~services.nodered.template`, :mod:`~services.nodered.json_node` and
  :mod:`~services.nodered.csv_node`;
* :mod:`~services.nodered.common`: what the node kinds share (errors naming the node, message
  fields by path).

Node-RED's semantics themselves (JavaScript values, message paths, JSONata, typed inputs, which
nodes can run here) are in :mod:`nodered_semantics`, shared with the translator and the engines.
"""
