"""The control plane: policy (admission), and later jobs, triggers, metering and billing."""

from fluxo.control.policy import Admission

__all__ = ["Admission"]
