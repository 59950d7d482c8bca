"""The ``http`` built-in service, in three modules: :mod:`~services.http.service` (requests and
results), :mod:`~services.http.policy` (which hosts a request may reach, checked again at connect
time) and :mod:`~services.http.credentials` (secret references, and credentials kept out of what
leaves).

Empty on purpose: :mod:`services.config` reads the host rules of :mod:`~services.http.policy`, and
the service reads :mod:`services.config`; importing the service here would make that a cycle.
The public names are re-exported by :mod:`services`.
"""
