"""The deployment files, checked for what an operator relies on: they parse, the gateway
runs as non-root with the health probes, migrations run once before new replicas serve,
every modelport container uses the one image, and the vLLM registration really works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import E2E_KEY

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def kustomized(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The objects a kustomization builds (its resources, folders followed), by kind and name."""
    kustomization = documents(folder / "kustomization.yaml")[0]
    files = {path.name for path in folder.glob("*.yaml")} - {"kustomization.yaml"}
    listed = {name for name in kustomization["resources"] if name.endswith(".yaml")}
    assert listed == files, f"{folder}/kustomization.yaml must list every manifest beside it"
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for name in kustomization["resources"]:
        if name.endswith(".yaml"):
            objects.update({(doc["kind"], doc["metadata"]["name"]): doc for doc in documents(folder / name)})
        else:
            objects.update(kustomized((folder / name).resolve()))
    return objects


def kubernetes_objects(overlay: str = "") -> dict[tuple[str, str], dict[str, Any]]:
    """What `kubectl apply -k deploy/kubernetes[/OVERLAY]` applies."""
    return kustomized(KUBERNETES / overlay if overlay else KUBERNETES)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def modelport_containers(objects: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for (kind, _), workload in objects.items():
        if kind in {"Deployment", "StatefulSet", "Job"}:
            spec = pod_spec(workload)
            found += [c for c in spec.get("initContainers", []) + spec["containers"] if c["image"] == "modelport"]
    return found


def test_the_gateways_run_as_non_root_with_probes_and_replicas() -> None:
    objects = kubernetes_objects()
    gateway = objects[("Deployment", "modelport")]
    assert gateway["spec"]["replicas"] >= 2
    spec = pod_spec(gateway)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    [container] = spec["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    service = objects[("Service", "modelport")]
    assert service["spec"]["selector"].items() <= gateway["spec"]["template"]["metadata"]["labels"].items()


def test_migrations_run_once_in_a_job_before_any_gateway_serves() -> None:
    objects = kubernetes_objects()
    config = objects[("ConfigMap", "modelport")]["data"]
    assert config["MODELPORT_MIGRATE_ON_START"] == "false" and config["MODELPORT_BOOTSTRAP"] == "false"
    job = objects[("Job", "modelport-prepare")]
    [prepare] = pod_spec(job)["containers"]
    assert prepare["command"] == ["python3", "-m", "modelport.cli.prepare"]
    gateway = pod_spec(objects[("Deployment", "modelport")])
    [wait] = gateway["initContainers"]
    assert wait["command"][:4] == ["python3", "-m", "modelport.cli.prepare", "--wait"]
    # The gateways read the same settings as the job that prepared their database.
    assert wait["envFrom"] == prepare["envFrom"] == gateway["containers"][0]["envFrom"]


def test_every_modelport_container_uses_the_one_image() -> None:
    assert len(modelport_containers(kubernetes_objects())) == 3  # gateway, its init container, the prepare job
    containers = modelport_containers(kubernetes_objects("vllm"))
    assert len(containers) == 4  # and the vLLM registration job
    for folder in (KUBERNETES / "base", KUBERNETES / "vllm"):
        kustomization = documents(folder / "kustomization.yaml")[0]
        assert [image["name"] for image in kustomization["images"]] == ["modelport"]
    for container in containers:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_gateways_read_only_root_has_a_writable_cache_for_the_embedding_model() -> None:
    """The embedding model is converted to GGUF on first load, into the user's cache
    (platformdirs: XDG_CACHE_HOME): on a read-only root it must be a volume."""
    objects = kubernetes_objects()
    cache = objects[("ConfigMap", "modelport")]["data"]["XDG_CACHE_HOME"]
    spec = pod_spec(objects[("Deployment", "modelport")])
    [gateway] = spec["containers"]
    [mount] = [mount for mount in gateway["volumeMounts"] if mount["mountPath"] == cache]
    [volume] = [volume for volume in spec["volumes"] if volume["name"] == mount["name"]]
    assert "emptyDir" in volume and not mount.get("readOnly")


def test_vllm_is_an_overlay_served_and_registered_at_its_service() -> None:
    assert ("Deployment", "vllm") not in kubernetes_objects()  # no GPU needed for the base
    objects = kubernetes_objects("vllm")
    assert all(document["metadata"].get("namespace") is None for document in objects.values())
    assert documents(KUBERNETES / "vllm" / "kustomization.yaml")[0]["namespace"] == "modelport"
    vllm = objects[("Deployment", "vllm")]
    [server] = pod_spec(vllm)["containers"]
    served = next(arg.split("=", 1)[1] for arg in server["args"] if arg.startswith("--served-model-name="))
    port = objects[("Service", "vllm")]["spec"]["ports"][0]["port"]
    script = objects[("ConfigMap", "modelport-register-vllm")]["data"]["register.py"]
    assert f'"base_url": "http://vllm:{port}/v1"' in script
    assert f'"model": "{served}"' in script


def test_compose_prepares_the_database_before_the_gateway() -> None:
    [compose] = documents(ROOT / "docker-compose.yml")
    services = compose["services"]
    gateway, prepare = services["gateway"], services["prepare"]
    assert gateway["depends_on"]["prepare"]["condition"] == "service_completed_successfully"
    assert prepare["command"] == ["python3", "-m", "modelport.cli.prepare"]
    assert gateway["environment"]["MODELPORT_MIGRATE_ON_START"] == "false"
    assert gateway["image"] == prepare["image"]
    assert gateway["environment"]["MODELPORT_DATABASE_URL"] == prepare["environment"]["MODELPORT_DATABASE_URL"]
    assert set(services) == {"gateway", "prepare", "postgres", "redis"}


def test_the_dockerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) == 2
    [user] = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert not user.startswith(("0", "root"))
    assert re.search(r"^HEALTHCHECK .*\n.*/health/live", dockerfile, re.MULTILINE)
    # The same portable llama.cpp flags as scripts/setup.
    assert "llama-cmake-args" in dockerfile and "scripts/llama-cmake-args" in (ROOT / "scripts/setup").read_text()
    [port] = re.findall(r"^EXPOSE (\d+)", dockerfile, re.MULTILINE)
    assert f"MODELPORT_PORT={port}" in dockerfile


@pytest.mark.e2e
def test_the_vllm_registration_job_registers_once(server: str) -> None:
    """The Job's script, run against a real server: a model and a deployment, and a
    second run (a retried Job) changes nothing."""
    script = kubernetes_objects("vllm")[("ConfigMap", "modelport-register-vllm")]["data"]["register.py"]
    env = {**os.environ, "MODELPORT_URL": server, "MODELPORT_API_KEY": E2E_KEY}
    runs = [
        subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
        for _ in range(2)
    ]
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("vLLM deployment ")
    models = httpx.get(f"{server}/v4/models", headers={"x-api-key": E2E_KEY}, params={"view": "Deployments"}).json()
    [model] = [found for found in models["items"] if found["name"] == "qwen2.5-1.5b-instruct"]
    assert model["model_creation_parameters"]["base_url"] == "http://vllm:8000/v1"
    assert len(model["deployments"]) == 1
