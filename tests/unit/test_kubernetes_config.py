"""How Fluxo finds the Kubernetes API: in-cluster files, a kubeconfig, the FLUXO_* settings;
each bad configuration fails naming the file, the place in it and the fix. And the CronJob
document itself (the one ``fluxo export --cronjob`` prints too), against Kubernetes' schema."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import yaml

from fluxo.control.kubernetes import (
    KubernetesClient,
    KubernetesConfig,
    KubernetesUnavailableError,
    StarterCronJob,
    cronjob_document,
    cronjob_name,
    in_cluster_config,
    kubeconfig_config,
    kubernetes_config,
)
from fluxo_core.config import FluxoConfig
from fluxo_core.errors import ConfigError
from tests.support.kubernetes_api import conform
from tests.support.tls import make_self_signed


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kubeconfig(tmp_path: Path, user: dict[str, Any], **cluster: Any) -> Path:
    ca = make_self_signed(tmp_path / "ca").cert.read_text()
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "work",
        "contexts": [
            {"name": "work", "context": {"cluster": "prod", "user": "fluxo", "namespace": "jobs"}},
            {"name": "other", "context": {"cluster": "nowhere", "user": "fluxo"}},
        ],
        "clusters": [
            {
                "name": "prod",
                "cluster": {
                    "server": "https://10.0.0.1:6443",
                    "certificate-authority-data": b64(ca),
                    **cluster,
                },
            }
        ],
        "users": [{"name": "fluxo", "user": user}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_kubeconfig_gives_server_namespace_ca_and_token(tmp_path: Path) -> None:
    config = kubeconfig_config(kubeconfig(tmp_path, {"token": "t0k3n"}))
    assert (config.server, config.namespace, config.token) == (
        "https://10.0.0.1:6443",
        "jobs",
        "t0k3n",
    )
    assert config.ca_pem is not None
    assert "BEGIN CERTIFICATE" in config.ca_pem
    assert isinstance(config.ssl_context(), ssl.SSLContext)
    assert "t0k3n" not in repr(config)


def test_a_kubeconfig_client_certificate_loads_from_files(tmp_path: Path) -> None:
    pair = make_self_signed(tmp_path / "client")
    path = kubeconfig(
        tmp_path, {"client-certificate": str(pair.cert), "client-key": "client/key.pem"}
    )
    config = kubeconfig_config(path)
    assert config.client_cert_pem == pair.cert.read_text()
    assert config.client_key_pem == pair.key.read_text()  # relative to the kubeconfig's folder
    assert isinstance(config.ssl_context(), ssl.SSLContext)


def test_a_client_key_that_does_not_match_its_certificate_is_named(tmp_path: Path) -> None:
    one, two = make_self_signed(tmp_path / "one"), make_self_signed(tmp_path / "two")
    path = kubeconfig(
        tmp_path,
        {
            "client-certificate-data": b64(one.cert.read_text()),
            "client-key-data": b64(two.key.read_text()),
        },
    )
    with pytest.raises(ConfigError, match="client certificate and key do not load together"):
        kubeconfig_config(path).ssl_context()


@pytest.mark.parametrize(
    ("user", "context", "expected"),
    [
        ({"token": "x"}, "missing", "no context 'missing' in contexts; the file has 'work'"),
        ({"token": "x"}, "other", "no cluster 'nowhere' in clusters (context 'other' names it)"),
        ({"exec": {"command": "aws"}}, None, "users['fluxo'].user.exec runs a credential plugin"),
        (
            {"client-certificate-data": "not base64!"},
            None,
            "users['fluxo'].user.client-certificate-data is not base64",
        ),
        ({"token": ["x"]}, None, "users['fluxo'].user.token must be text"),
    ],
)
def test_a_bad_kubeconfig_names_the_problem_and_where(
    tmp_path: Path, user: dict[str, Any], context: str | None, expected: str
) -> None:
    path = kubeconfig(tmp_path, user)
    with pytest.raises(ConfigError) as failed:
        kubeconfig_config(path, context)
    assert expected in failed.value.message
    assert str(path) in failed.value.message


def test_a_kubeconfig_that_is_not_one_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("a: &x [*x, *x]\n  bad: indentation")
    with pytest.raises(ConfigError, match=f"kubeconfig {path} is not a kubeconfig"):
        kubeconfig_config(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping with contexts"):
        kubeconfig_config(path)
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        kubeconfig_config(tmp_path / "absent")
    bad_ca = kubeconfig(tmp_path, {"token": "x"}, **{"certificate-authority-data": b64("hi")})
    with pytest.raises(ConfigError, match="does not hold a PEM text"):
        kubeconfig_config(bad_ca)


def test_in_cluster_reads_the_service_account_files(tmp_path: Path) -> None:
    ca = make_self_signed(tmp_path / "ca").cert.read_text()
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text(ca)
    (tmp_path / "namespace").write_text("fluxo\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = in_cluster_config(env, tmp_path)
    assert (config.server, config.namespace, config.token_file) == (
        "https://10.96.0.1:443",
        "fluxo",
        tmp_path / "token",
    )
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST is not set"):
        in_cluster_config({}, tmp_path)
    (tmp_path / "token").unlink()
    with pytest.raises(ConfigError, match="automountServiceAccountToken"):
        in_cluster_config(env, tmp_path)


def test_the_settings_choose_how_and_refuse_what_they_do_not_know(tmp_path: Path) -> None:
    home = {"FLUXO_HOME": str(tmp_path)}
    assert kubernetes_config(FluxoConfig.from_env(home), {}) is None
    with pytest.raises(ConfigError, match="FLUXO_KUBERNETES='yes' is not a choice"):
        FluxoConfig.from_env({**home, "FLUXO_KUBERNETES": "yes"})
    no_file = FluxoConfig.from_env({**home, "FLUXO_KUBERNETES": "kubeconfig"})
    with pytest.raises(ConfigError, match="FLUXO_KUBECONFIG is not set"):
        kubernetes_config(no_file, {})
    path = kubeconfig(tmp_path, {"token": "x"})
    settings = FluxoConfig.from_env(
        {
            **home,
            "FLUXO_KUBERNETES": "kubeconfig",
            "FLUXO_KUBECONFIG": str(path),
            "FLUXO_KUBERNETES_NAMESPACE": "cron",
        }
    )
    found = kubernetes_config(settings, {})
    assert found is not None
    assert found.namespace == "cron"
    with pytest.raises(ConfigError, match="not a Kubernetes namespace name"):
        KubernetesConfig(server="https://k:6443", namespace="Bad_NS")


async def test_a_rotated_token_file_is_read_again_and_5xx_is_retryable(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    config = KubernetesConfig(server="https://k.test:6443", token_file=token)
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(503, json={"kind": "Status", "message": "etcd is away"})

    with respx.mock() as router:
        router.get(url__startswith="https://k.test:6443/").mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            client = KubernetesClient(config, client=http)
            with pytest.raises(KubernetesUnavailableError) as failed:
                await client.get("/apis/batch/v1/namespaces/default/cronjobs/x", "get x")
            assert failed.value.retryable
            assert "answered 503 to get x: etcd is away" in failed.value.message
            token.write_text("second")
            client._token = (None, 0.0)  # the cache ran out (60 s of the monotonic clock)
            with pytest.raises(KubernetesUnavailableError):
                await client.get("/apis/batch/v1/namespaces/default/cronjobs/x", "get x")
    assert seen == ["Bearer first", "Bearer second"]


def test_the_cronjob_document_is_a_valid_cronjob_and_carries_no_secret() -> None:
    document = cronjob_document(
        StarterCronJob(
            account="Acme Corp",
            workflow="count-up",
            trigger="a-very-long-trigger-name-that-goes-on-and-on-for-ever",
            schedule="*/5 * * * *",
            time_zone="Europe/Paris",
            concurrency="replace",
            input={"quote": 'it\'s "$(rm -rf /)"'},
            gateway_url="https://fluxo.example.com/",
        )
    )
    conform("CronJob", document)
    name = document["metadata"]["name"]
    assert name == cronjob_name(
        "Acme Corp", "a-very-long-trigger-name-that-goes-on-and-on-for-ever"
    )
    assert len(name) <= 52
    assert name.startswith("fluxo-")
    assert document["metadata"]["labels"]["fluxo.dev/account"] != "Acme Corp"  # hashed to fit
    assert document["metadata"]["annotations"]["fluxo.dev/account"] == "Acme Corp"
    container = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    # The input travels in the environment, never in the script.
    assert "rm -rf" not in container["command"][-1]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert json.loads(env["FLUXO_INPUT"]) == {"quote": 'it\'s "$(rm -rf /)"'}
    assert env["FLUXO_JOBS_URL"] == "https://fluxo.example.com/v1/workflows/count-up/jobs"
    assert "valueFrom" in next(e for e in container["env"] if e["name"] == "FLUXO_AUTHORIZATION")


def test_the_starter_script_keys_a_job_by_its_scheduled_slot(tmp_path: Path) -> None:
    """The container's script run by this machine's sh and date, with curl replaced by a
    program that prints its arguments: the Job name's minute suffix becomes the key."""
    import os
    import subprocess

    shim = tmp_path / "curl"
    shim.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    shim.chmod(0o755)
    document = cronjob_document(
        StarterCronJob(
            account="acme",
            workflow="count-up",
            trigger="nightly",
            schedule="0 2 * * *",
            input={"q": "it's %s $(x)"},
            gateway_url="http://fluxo:8240",
        )
    )
    container = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    env["FLUXO_AUTHORIZATION"] = "Bearer engine-token"
    env["PATH"] = f"{tmp_path}:{os.environ['PATH']}"
    # The CronJob controller names a Job <cronjob>-<scheduled minute since the epoch>.
    env["FLUXO_JOB_NAME"] = f"{document['metadata']['name']}-30000000"
    ran = subprocess.run(container["command"], env=env, capture_output=True, text=True, check=True)
    args = ran.stdout.splitlines()
    assert "Idempotency-Key: trigger:nightly:2027-01-15T08:00:00Z" in args
    body = json.loads(args[args.index("-d") + 1])
    assert body == {
        "input": {"q": "it's %s $(x)"},
        "headers": {"fluxo-trigger": "nightly", "fluxo-scheduled-at": "2027-01-15T08:00:00Z"},
    }
    assert args[-1] == "http://fluxo:8240/v1/workflows/count-up/jobs"
