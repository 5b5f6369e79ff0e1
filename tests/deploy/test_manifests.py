"""deploy/ files agree with the code and with each other: compose renders the nginx template the topology test runs,
the Kubernetes probes and autoscaler use endpoints and metrics the service has, the images install what the
packages need, and the tools that can check a file here (docker compose, systemd-analyze) accept it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.metrics import Metrics
from tests.deploy.proxy import DEPLOY, PLACEHOLDER, TEMPLATE

ROOT = DEPLOY.parent
K8S = DEPLOY / "k8s"


def compose_client() -> list[str] | None:
    """`docker compose` (the v2 plugin), else the standalone docker-compose, else None."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def k8s_objects() -> dict[tuple[str, str], dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            objects[doc["kind"], doc["metadata"]["name"]] = doc
    return objects


def test_compose_renders_the_nginx_template_the_topology_test_runs():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    nginx = compose["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/templates/default.conf.template:ro" in nginx["volumes"]
    assert set(PLACEHOLDER.findall(TEMPLATE.read_text())) == set(nginx["environment"])  # every placeholder filled
    replicas = {v.split(":")[0] for k, v in nginx["environment"].items() if k.startswith("LIVECAPTIONS_REPLICA_")}
    assert len(replicas) == 2 and replicas <= set(compose["services"])
    for name in replicas:
        env = compose["services"][name]["environment"]
        assert env["LIVECAPTIONS_REDIS_URL"].startswith("redis://redis:")  # the compose service below
        assert env["LIVECAPTIONS_API_KEYS"].startswith("${LIVECAPTIONS_API_KEYS:?")  # required: serve refuses without
    assert "redis" in compose["services"]


def test_every_nginx_location_passes_the_clients_host_on():
    """nginx inherits proxy_set_header into a location only when it sets none of its own: then the replicas would
    see the upstream's name as Host, which their Host and Origin checks refuse (the topology test runs replicas
    without keys, whose Host check caught it)."""
    text = TEMPLATE.read_text()
    server = text[text.index("server {"):]
    first = re.search(r"^\s*location ", server, re.MULTILINE).start()
    assert "proxy_set_header Host $host;" in server[:first]
    assert "proxy_set_header" not in server[first:]


def test_docker_compose_accepts_compose_yaml():
    client = compose_client()
    if client is None:
        why = "docker client not installed" if shutil.which("docker") is None else "docker client has no compose plugin"
        pytest.skip(f"{why} and docker-compose is not installed: compose.yaml not validated")
    done = subprocess.run([*client, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"], capture_output=True, text=True,
                          env={**os.environ, "LIVECAPTIONS_API_KEYS": "sha256:" + "0" * 64})
    assert done.returncode == 0, done.stderr


def test_kubernetes_probes_and_autoscaler_use_what_the_service_has():
    objects = k8s_objects()
    deployment = objects["Deployment", "livecaptions"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] > 120  # uvicorn's graceful drain (gateway/serve.py) fits
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    redis = objects["Service", "redis"]["spec"]["ports"][0]["port"]
    assert env["LIVECAPTIONS_REDIS_URL"] == f"redis://redis:{redis}/0"
    assert env["LIVECAPTIONS_HOST"] == "0.0.0.0" and env["LIVECAPTIONS_API_KEYS"]["secretKeyRef"]  # keys: serve refuses without
    service = objects["Service", "livecaptions"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    exported = Metrics(lambda: 0, lambda: None).render().decode()
    hpa = objects["HorizontalPodAutoscaler", "livecaptions"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "livecaptions"
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    assert names and all(re.search(rf"^{n} ", exported, re.M) for n in names), names


def test_images_pin_torch_and_copy_what_the_packages_need():
    for name in ("Dockerfile",):  # one file for both builds: the CUDA one passes TORCH_INDEX=.../cu128 and DEVICE=cuda
        text = (DEPLOY / name).read_text()
        assert "ARG TORCH_SPEC=torch==2.13.0" in text and "/whl/cpu" in text and "/whl/cu128 --build-arg DEVICE=cuda" in text
        allowed = {line[1:].rstrip("/") for line in (DEPLOY / f"{name}.dockerignore").read_text().splitlines()
                   if line.startswith("!")}
        copied = [src for line in text.splitlines() if line.startswith("COPY ") for src in line.split()[1:-1]]
        for src in copied:
            assert (ROOT / src).exists() and src in allowed, src  # in the repository and in the build context
        assert {"engine", "gateway", "vad", "web"} <= set(copied)  # the packages, and the pages the app serves


def test_systemd_unit_verifies(tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed: the unit is not verified")
    # As installed from this checkout (the unit expects it at /opt/livecaptions).
    unit = tmp_path / "livecaptions.service"
    unit.write_text((DEPLOY / "livecaptions.service").read_text().replace("/opt/livecaptions", str(ROOT)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
