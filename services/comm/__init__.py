"""External communication: the ``email-send``, ``sms-send`` and ``webhook-send`` built-in services.

One module per service (:mod:`~services.comm.email`, :mod:`~services.comm.sms`,
:mod:`~services.comm.webhook`) and :mod:`~services.comm.common` for what they share: stored
credentials named by reference, the connection to a vetted address, attachments by reference.

Empty on purpose, like :mod:`services.http`: the public names are re-exported by :mod:`services`.
"""
