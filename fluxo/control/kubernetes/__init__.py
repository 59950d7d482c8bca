"""Fluxo's side of a Kubernetes cluster: the API's configuration, a small client, and the
CronJob that starts jobs through the Fluxo API.

- :mod:`._config`: in-cluster or kubeconfig (:func:`kubernetes_config` reads the settings);
- :mod:`._client`: get, create, replace and delete one object, errors mapped once;
- :mod:`.cronjob`: the CronJob document (cron triggers on Kubernetes, ``fluxo export``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fluxo.control.kubernetes._client import KubernetesClient, KubernetesUnavailableError
from fluxo.control.kubernetes._config import (
    SERVICE_ACCOUNT_DIR,
    KubernetesConfig,
    in_cluster_config,
    kubeconfig_config,
)
from fluxo.control.kubernetes.cronjob import StarterCronJob, cronjob_document, cronjob_name
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "KubernetesClient",
    "KubernetesConfig",
    "KubernetesUnavailableError",
    "StarterCronJob",
    "cronjob_document",
    "cronjob_name",
    "in_cluster_config",
    "kubeconfig_config",
    "kubernetes_config",
]


def kubernetes_config(
    config: FluxoConfig, env: Mapping[str, str] | None = None
) -> KubernetesConfig | None:
    """The Kubernetes API the settings name (``FLUXO_KUBERNETES``), or None when it is off.

    Raises:
        ConfigError: a configuration that does not work, naming the setting and the fix.
    """
    env = os.environ if env is None else env
    if config.kubernetes == "off":
        return None
    if config.kubernetes == "in-cluster":
        found = in_cluster_config(env)
    else:
        path = config.kubeconfig
        if path is None:
            raise ConfigError(
                "FLUXO_KUBERNETES=kubeconfig but FLUXO_KUBECONFIG is not set; give the path of "
                "the kubeconfig file (e.g. ~/.kube/config)",
                setting="FLUXO_KUBECONFIG",
            )
        found = kubeconfig_config(path, config.kubernetes_context)
    return found.with_namespace(config.kubernetes_namespace)
