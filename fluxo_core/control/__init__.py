"""The control plane: policy (admission), and later jobs, triggers, metering and billing."""

from fluxo_core.control.policy import Admission

__all__ = ["Admission"]
