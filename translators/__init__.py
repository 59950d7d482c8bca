"""Pure translators between the workflow IR and engine formats (no I/O, deterministic output)."""

from translators.argo import ArgoBundle, CronTrigger, check_argo, to_argo, to_argo_job, to_yaml
from translators.nodered import (
    FLOW_LIMITS,
    FidelityReport,
    NodeRedImport,
    NodeRedOptions,
    check_flow,
    from_nodered,
    to_nodered,
    to_nodered_flows,
)

__all__ = [
    "FLOW_LIMITS",
    "ArgoBundle",
    "CronTrigger",
    "FidelityReport",
    "NodeRedImport",
    "NodeRedOptions",
    "check_argo",
    "check_flow",
    "from_nodered",
    "to_argo",
    "to_argo_job",
    "to_nodered",
    "to_nodered_flows",
    "to_yaml",
]
