"""Triggers: what starts jobs without a caller (cron, webhooks, and sources that plug in).

- :mod:`.service`: firing (holds, admission, one job per event) and the trigger commands;
- :mod:`.source`: the interface a trigger type's source implements;
- :mod:`.cron`: schedules, catch-up; :mod:`.supervisor`: the scheduler and the sources;
- :mod:`.webhook`: signatures and payloads of ``POST /hooks/...``;
- :mod:`.controller`: the Trigger resource's controller.
"""

from fluxo.control.triggers.controller import TriggerController, hook_path
from fluxo.control.triggers.service import TriggerService
from fluxo.control.triggers.source import FireResult, SourceFactory, TriggerSink, TriggerSource
from fluxo.control.triggers.supervisor import TriggerSupervisor

__all__ = [
    "FireResult",
    "SourceFactory",
    "TriggerController",
    "TriggerService",
    "TriggerSink",
    "TriggerSource",
    "TriggerSupervisor",
    "hook_path",
]
