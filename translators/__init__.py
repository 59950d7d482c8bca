"""Pure translators between the workflow IR and engine formats (no I/O, deterministic output)."""

from translators.argo import ArgoBundle, CronTrigger, check_argo, to_argo, to_argo_job, to_yaml

__all__ = ["ArgoBundle", "CronTrigger", "check_argo", "to_argo", "to_argo_job", "to_yaml"]
