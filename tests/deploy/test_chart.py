"""The Helm chart (deploy/k8s), rendered by a real helm 3 with each value set it ships:
lint, Kubernetes schema validation of every object, and the properties the fleet relies on
(GPU workers, autoscalers owning replicas, probes, drains, PDBs, ingress routes, secrets,
settings the services really read)."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "k8s"
RELEASE = "dl"
NAMESPACE = "voice"

# The value sets the chart is released with: name -> overlay files (on top of values.yaml).
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "gpu-production": ("values-gpu-production.yaml",),
    "cpu-trial": ("values-cpu-trial.yaml",),
}
# What an operator passes on the command line with a value set (the trial's credentials).
VALUE_SET_ARGS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "gpu-production": (),
    "cpu-trial": (
        "secrets.values.twilioAccountSid=AC00000000000000000000000000000000",
        "secrets.values.twilioAuthToken=00000000000000000000000000000000",
        "secrets.values.llmApiKey=sk-trial",
    ),
}

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Helm:
    path: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.path), *args], capture_output=True, text=True, timeout=60, check=False
        )

    def _template_args(self, files: Sequence[str], sets: Sequence[str]) -> list[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        for name in files:
            args += ["-f", str(CHART / name)]
        for item in sets:
            args += ["--set", item]
        return args

    def template(self, files: Sequence[str] = (), sets: Sequence[str] = ()) -> list[Manifest]:
        """Render the chart; every object it outputs, in order."""
        result = self.run(*self._template_args(files, sets))
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def template_error(self, files: Sequence[str] = (), sets: Sequence[str] = ()) -> str:
        """Render values the chart must refuse; the error helm prints."""
        result = self.run(*self._template_args(files, sets))
        assert result.returncode != 0, f"helm template accepted {list(files)} {list(sets)}"
        return result.stderr


@pytest.fixture(scope="session")
def helm() -> Helm:
    path = Path(os.environ.get("HELM") or REPO / ".tools" / "helm")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"helm not found at {path}: run `make setup` (it installs .tools/helm), "
            "or set HELM to a helm 3 binary"
        )
    version = subprocess.run(
        [str(path), "version", "--short"], capture_output=True, text=True, check=False
    )
    if version.returncode != 0 or not version.stdout.startswith("v3."):
        pytest.fail(f"{path} is not a working helm 3: {version.stdout}{version.stderr}")
    return Helm(path)


@pytest.fixture(scope="session")
def rendered(helm: Helm) -> dict[str, list[Manifest]]:
    """The chart rendered once per value set (helm template is a subprocess: keep it rare)."""
    return {name: helm.template(files, VALUE_SET_ARGS[name]) for name, files in VALUE_SETS.items()}


SCHEMAS = Path(__file__).parent / "schemas"
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas
# kubernetes-validate bundles: an object must be valid on both.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
# Objects of CRDs (not in the Kubernetes schemas): validated against vendored, trimmed CRD
# schemas instead.
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
}
GPU_WORKERS = ("stt", "tts")
SETTINGS = {
    "gateway": "dealerline_gateway.settings:GatewaySettings",
    "stt": "dealerline_stt.settings:SttSettings",
    "tts": "dealerline_tts.settings:TtsSettings",
    "agent": "dealerline_agent.settings:AgentSettings",
    "escalation": "dealerline_escalation.settings:EscalationSettings",
    "dashboard-api": "dealerline_dashboard.settings:DashboardSettings",
    "aftercall": "dealerline_aftercall.settings:AftercallSettings",
}
# Variables the chart already sets for settings that are still being added to a service.
# Remove a name once its setting exists; test_env_vars_are_settings_the_services_read checks
# every other prefixed variable.
PENDING_SETTINGS: set[str] = set()
# Dummy secret values of the right shape, to build the settings from a rendered pod.
SECRET_SAMPLES = {
    "twilio-account-sid": "AC" + "0" * 32,
    "twilio-auth-token": "0" * 32,
    "llm-api-key": "sk-test",
    "database-url": "postgresql+asyncpg://u:p@db:5432/d",
    "redis-url": "redis://redis:6379/0",
    "smtp-password": "smtp-secret",
    "dashboard-auth-secret": "s" * 48,
    "redis-password": "r" * 32,
}


def secret_sample(key: str) -> str:
    """A value of the right shape for a Secret key (per-service NATS passwords included)."""
    if key.startswith("nats-password-"):
        return "n" * 32
    return SECRET_SAMPLES[key]


TRIAL_SECRET = f"{RELEASE}-dealerline-secrets"


# ----------------------------------------------------------------------------- helpers


def of_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def component(doc: Manifest) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def deployments(docs: list[Manifest]) -> dict[str, Manifest]:
    """Deployments by component (gateway, stt, ...)."""
    return {component(d): d for d in docs if d["kind"] == "Deployment"}


def main_container(deployment: Manifest) -> Manifest:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def env_of(container: Manifest) -> dict[str, Any]:
    """Plain values as strings; secret references as ("secret", name, key)."""
    out: dict[str, Any] = {}
    for item in container.get("env", []):
        if "value" in item:
            out[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            out[item["name"]] = ("secret", ref["name"], ref["key"])
    return out


def owned_replicas(docs: list[Manifest]) -> dict[str, str]:
    """Deployment name -> the kind of autoscaler that owns its replica count."""
    owners: dict[str, str] = {}
    for doc in docs:
        if doc["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = doc["spec"]["scaleTargetRef"]
            assert target.get("kind", "Deployment") == "Deployment"
            name = target["name"]
            assert name not in owners, f"{name} has two autoscalers"
            owners[name] = doc["kind"]
    return owners


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def settings_class(service: str) -> type[Any]:
    """The service's settings class, loaded from its settings.py alone: the package's
    __init__ imports the whole service, which these tests do not need."""
    module, name = SETTINGS[service].split(":")
    package = module.split(".")[0]
    path = REPO / "services" / service / "src" / package / "settings.py"
    spec = importlib.util.spec_from_file_location(f"_chart_test_{package}_settings", path)
    assert spec and spec.loader, path
    loaded = importlib.util.module_from_spec(spec)
    # pydantic resolves the postponed annotations through sys.modules.
    sys.modules[spec.name] = loaded
    try:
        spec.loader.exec_module(loaded)
    except ImportError:
        # A settings module with package-relative imports: import the package after all.
        loaded = importlib.import_module(module)
    return getattr(loaded, name)  # type: ignore[no-any-return]


def env_names(cls: type[Any]) -> set[str]:
    """The environment variables a pydantic-settings class reads."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def all_value_sets(rendered: dict[str, list[Manifest]]) -> Iterator[tuple[str, Manifest]]:
    for name, docs in rendered.items():
        for doc in docs:
            yield name, doc


# ----------------------------------------------------------------------------- lint, schemas


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_helm_lint_strict(helm: Helm, value_set: str) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for name in VALUE_SETS[value_set]:
        args += ["-f", str(CHART / name)]
    for item in VALUE_SET_ARGS[value_set]:
        args += ["--set", item]
    result = helm.run(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_values_schema_is_valid_and_strict() -> None:
    """values.schema.json is a valid schema that the defaults meet and that refuses unknown
    keys at every level a typo is likely (helm applies it on every install and render)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    validator.validate(values)
    for typo in (
        {"publicURL": "https://x.example.com"},
        {"keda": {**values["keda"], "enable": True}},
        {"serviceDefaults": {**values["serviceDefaults"], "replica": 1}},
        {"services": [{**values["services"][0], "drainTimeout": 5}]},
        {"serviceOverrides": {"stt": {"autoscaling": {"keda": {"enabeld": True}}}}},
        {"llm": {**values["llm"], "baseURL": "http://vllm:8000/v1"}},
        {"notifications": {**values["notifications"], "smtpHost": "smtp.example.com"}},
        {"notifications": {**values["notifications"], "smtp": {"host": "smtp.example.com:587"}}},
        {"secrets": {**values["secrets"], "values": {"smtpPasword": "x"}}},
    ):
        assert not validator.is_valid({**values, **typo}), typo


@pytest.fixture(scope="module")
def cached_kube_schemas() -> Iterator[None]:
    """kubernetes-validate parses its multi-megabyte definitions file on every call; parse
    each schema file once for the whole module instead (the parsed schemas are only read)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(
            kubernetes_validate.utils,
            "schema_contents",
            functools.cache(kubernetes_validate.utils.schema_contents),
        )
        yield


@pytest.mark.usefixtures("cached_kube_schemas")
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_object_validates_against_its_schema(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    docs = rendered[value_set]
    assert docs
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        where = f"{value_set}: {doc['kind']}/{doc['metadata']['name']}"
        if key in CRD_SCHEMAS:
            schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
            assert not errors, f"{where}: " + "; ".join(
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
            )
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(map(str, exc.path))
                pytest.fail(f"{where} invalid on Kubernetes {version} at {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(f"{where}: no Kubernetes {version} schema for {key}")


@pytest.mark.usefixtures("cached_kube_schemas")
def test_kubernetes_schemas_catch_mistakes(rendered: dict[str, list[Manifest]]) -> None:
    """Strict validation is not vacuous: an unknown field or a wrong type fails it."""
    dep = next(d for d in rendered["defaults"] if d["kind"] == "Deployment")
    version = KUBE_VERSIONS[0]
    kubernetes_validate.validate(dep, version, strict=True)
    unknown = json.loads(json.dumps(dep))
    unknown["spec"]["template"]["spec"]["containers"][0]["startupprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, version, strict=True)
    wrong = json.loads(json.dumps(dep))
    wrong["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "35"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, version, strict=True)


def test_crd_schemas_catch_mistakes(rendered: dict[str, list[Manifest]]) -> None:
    """The vendored schemas are not vacuous: a typo or a missing trigger field fails them."""
    scaled = next(d for d in rendered["gpu-production"] if d["kind"] == "ScaledObject")
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")]).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(scaled)
    typo = json.loads(json.dumps(scaled))
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")
    assert not validator.is_valid(typo)
    untyped = json.loads(json.dumps(scaled))
    del untyped["spec"]["triggers"][0]["type"]
    assert not validator.is_valid(untyped)
    numeric = json.loads(json.dumps(scaled))
    numeric["spec"]["triggers"][0]["metadata"]["threshold"] = 0.7
    assert not validator.is_valid(numeric)


# ----------------------------------------------------------------------------- the fleet


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_one_deployment_service_and_pdb_per_service(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    docs = rendered[value_set]
    deps = deployments(docs)
    assert set(deps) == set(SETTINGS)
    services = {component(s): s for s in docs if s["kind"] == "Service"}
    pdbs = {component(p): p for p in docs if p["kind"] == "PodDisruptionBudget"}
    for name, dep in deps.items():
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selects(dep["spec"]["selector"]["matchLabels"], pod_labels)
        svc = services[name]
        assert selects(svc["spec"]["selector"], pod_labels)
        port = main_container(dep)["ports"][0]
        assert port["name"] == "http"
        assert svc["spec"]["ports"][0]["port"] == port["containerPort"]
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
        pdb = pdbs[name]
        assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
        assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
        # Selectors of different services never overlap.
        for other, other_dep in deps.items():
            if other != name:
                assert not selects(
                    dep["spec"]["selector"]["matchLabels"],
                    other_dep["spec"]["template"]["metadata"]["labels"],
                )


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_no_replicas_where_an_autoscaler_owns_them(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    docs = rendered[value_set]
    owners = owned_replicas(docs)
    deps = of_kind(docs, "Deployment")
    assert set(owners) <= set(deps), "an autoscaler targets a Deployment that does not exist"
    assert owners, "no service is autoscaled"
    for name, dep in deps.items():
        if name in owners:
            assert "replicas" not in dep["spec"], f"{name}: replicas next to its {owners[name]}"
        else:
            assert dep["spec"]["replicas"] >= 1, name
    for hpa in of_kind(docs, "HorizontalPodAutoscaler").values():
        spec = hpa["spec"]
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        assert spec["metrics"]


def test_speech_workers_scale_with_keda_in_production(
    rendered: dict[str, list[Manifest]],
) -> None:
    docs = rendered["gpu-production"]
    owners = {
        name.removeprefix(f"{RELEASE}-dealerline-"): kind
        for name, kind in owned_replicas(docs).items()
    }
    for worker in GPU_WORKERS:
        assert owners[worker] == "ScaledObject"
    assert owners["gateway"] == "HorizontalPodAutoscaler"
    for scaled in of_kind(docs, "ScaledObject").values():
        worker = component(scaled)
        triggers = scaled["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"prometheus"}
        queries = " ".join(t["metadata"]["query"] for t in triggers)
        # Speech work waiting: in-flight over capacity, and the queue wait.
        assert f"dealerline_{worker}_jobs_in_flight" in queries
        assert f"dealerline_{worker}_worker_capacity" in queries
        assert f"dealerline_{worker}_queue_wait_seconds_bucket" in queries
        # Only this release's pods of this worker kind count.
        assert f'namespace="{NAMESPACE}"' in queries
        assert f'pod=~"{RELEASE}-dealerline-{worker}-.*"' in queries
        for trigger in triggers:
            meta = trigger["metadata"]
            assert meta["serverAddress"].startswith("http")
            assert float(meta["threshold"]) > 0
            assert trigger["metricType"] == "Value"
        spec = scaled["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]


@pytest.mark.parametrize("value_set", ["defaults", "cpu-trial"])
def test_hpa_fallback_without_keda(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    docs = rendered[value_set]
    assert not of_kind(docs, "ScaledObject")
    hpas = {component(h): h for h in docs if h["kind"] == "HorizontalPodAutoscaler"}
    for worker in GPU_WORKERS:
        metrics = hpas[worker]["spec"]["metrics"]
        assert metrics[0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("worker", GPU_WORKERS)
def test_keda_metrics_are_the_ones_the_workers_export(worker: str) -> None:
    """The KEDA queries name metrics a real worker registers, with the right types."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    keda = next(s for s in values["services"] if s["name"] == worker)["autoscaling"]["keda"]
    package = f"dealerline_{worker}"
    service_cls = getattr(importlib.import_module(f"{package}.service"), f"{worker.title()}Service")
    settings_cls = getattr(
        importlib.import_module(f"{package}.settings"), f"{worker.title()}Settings"
    )
    service = service_cls(settings_cls(http_port=0))  # registers its metrics; starts nothing
    types = {m.name: m.type for m in service.metrics.registry.collect()}
    assert types[keda["inFlightMetric"]] == "gauge"
    assert types[keda["capacityMetric"]] == "gauge"
    assert types[keda["queueWaitMetric"]] == "histogram"


@pytest.mark.parametrize("worker", GPU_WORKERS)
def test_gpu_workers_get_gpus_nodes_shm_and_models(
    rendered: dict[str, list[Manifest]], worker: str
) -> None:
    dep = deployments(rendered["gpu-production"])[worker]
    pod = dep["spec"]["template"]["spec"]
    container = main_container(dep)
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm["medium"] == "Memory" and shm["sizeLimit"]
    models = mounts["/models"]
    assert models["readOnly"] is True
    assert volumes[models["name"]]["persistentVolumeClaim"]["readOnly"] is True
    env = env_of(container)
    assert env[f"{worker.upper()}_DEVICE"] == "cuda"
    model_paths = [v for k, v in env.items() if "MODEL" in k and isinstance(v, str)]
    assert model_paths and all(p.startswith("/models/") for p in model_paths)
    assert container["image"].endswith("-cuda")
    # Model loading gets minutes, not the default seconds, before a restart.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_gpu_type_comes_from_one_setting(helm: Helm) -> None:
    docs = helm.template(
        ["values-gpu-production.yaml"],
        ["gpu.resourceName=amd.com/gpu", "serviceOverrides.tts.gpu.count=2"],
    )
    deps = deployments(docs)
    assert main_container(deps["stt"])["resources"]["limits"] == {
        "memory": "12Gi",
        "amd.com/gpu": 1,
    }
    assert main_container(deps["tts"])["resources"]["requests"]["amd.com/gpu"] == 2
    docs = helm.template(
        ["values-gpu-production.yaml"],
        ["serviceOverrides.stt.gpu.resourceName=nvidia.com/mig-1g.10gb"],
    )
    limits = main_container(deployments(docs)["stt"])["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.10gb"] == 1 and "nvidia.com/gpu" not in limits


@pytest.mark.parametrize("value_set", ["defaults", "cpu-trial"])
def test_no_gpu_outside_gpu_workers(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    for name, dep in deployments(rendered[value_set]).items():
        resources = main_container(dep)["resources"]
        text = json.dumps(resources)
        assert "gpu" not in text, f"{value_set}/{name} asks for a GPU"
    for name, dep in deployments(rendered["gpu-production"]).items():
        if name not in GPU_WORKERS:
            assert "gpu" not in json.dumps(main_container(dep)["resources"]), name


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_probes_drain_and_grace_period(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    for name, dep in deployments(rendered[value_set]).items():
        pod = dep["spec"]["template"]["spec"]
        container = main_container(dep)
        assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        env = env_of(container)
        prefix = settings_class(name).model_config["env_prefix"]
        assert env[f"{prefix}HTTP_PORT"] == str(container["ports"][0]["containerPort"])
        drain = float(env[f"{prefix}DRAIN_TIMEOUT_S"])
        pre_stop = 0
        if "lifecycle" in container:
            command = container["lifecycle"]["preStop"]["exec"]["command"]
            assert command[0] == "sleep"
            pre_stop = int(command[1])
        grace = pod["terminationGracePeriodSeconds"]
        assert grace >= pre_stop + drain + 5, f"{value_set}/{name}: grace {grace} < drain"
    gateway = main_container(deployments(rendered[value_set])["gateway"])
    # Calls keep their stream through a rollout: the gateway's drain waits minutes.
    assert float(env_of(gateway)["GATEWAY_DRAIN_TIMEOUT_S"]) >= 60


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_pods_run_locked_down(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    for _, doc in all_value_sets({value_set: rendered[value_set]}):
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if doc["kind"] != "StatefulSet":
                assert "/tmp" in mounts, f"{doc['metadata']['name']}: no writable /tmp"
            if doc["kind"] == "Deployment":
                # The uid the Dockerfiles create and switch to.
                assert pod["securityContext"]["runAsUser"] == 10001


def test_ingress_routes_and_websocket_timeouts(rendered: dict[str, list[Manifest]]) -> None:
    for value_set, docs in rendered.items():
        (ingress,) = of_kind(docs, "Ingress").values()
        services = {s["metadata"]["name"]: s for s in docs if s["kind"] == "Service"}
        routes: dict[str, str] = {}
        (rule,) = ingress["spec"]["rules"]
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            svc = services[backend["name"]]
            assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}
            routes[path["path"]] = component(svc)
            if component(svc) == "blocked":
                # Ops endpoints: refused exactly, by a Service that selects no pod.
                assert path["pathType"] == "Exact"
                assert "selector" not in svc["spec"]
            else:
                assert path["pathType"] == "Prefix"
        assert routes == {
            "/api/voice/incoming": "gateway",
            "/api/voice/escalate": "gateway",
            "/api/voice/return-to-ai": "gateway",
            "/api/voice/media-stream": "gateway",
            "/api/voice/human-answer": "escalation",
            "/api/voice/human-detected": "escalation",
            "/api/voice/human-confirmed": "escalation",
            "/api/voice/human-status": "escalation",
            "/api/voice/conference-status": "escalation",
            "/": "dashboard-api",
            "/ws": "dashboard-api",
            "/metrics": "blocked",
            "/livez": "blocked",
            "/readyz": "blocked",
        }, value_set
        annotations = ingress["metadata"]["annotations"]
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600
        host = rule["host"]
        gateway_env = env_of(main_container(deployments(docs)["gateway"]))
        # Twilio signs the public URL: the gateway must be configured with the host it is
        # reached on.
        assert gateway_env["GATEWAY_PUBLIC_URL"] == f"https://{host}"
        assert ingress["spec"]["tls"][0]["hosts"] == [host]


def test_haproxy_controller_gets_its_tunnel_timeout(helm: Helm) -> None:
    docs = helm.template(
        sets=[
            "ingress.controller=haproxy",
            "ingress.className=haproxy",
            "ingress.websocketTimeoutSeconds=7200",
        ]
    )
    (ingress,) = of_kind(docs, "Ingress").values()
    annotations = ingress["metadata"]["annotations"]
    assert annotations == {"haproxy.org/timeout-tunnel": "7200s"}


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_secrets_reach_the_services_that_need_them(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    docs = rendered[value_set]
    chart_secrets = of_kind(docs, "Secret")
    refs: dict[str, set[str]] = {}
    for name, dep in deployments(docs).items():
        for value in env_of(main_container(dep)).values():
            if isinstance(value, tuple):
                refs.setdefault(name, set()).add(value[2])
                secret_name = value[1]
                if chart_secrets:
                    assert secret_name in chart_secrets
                    assert value[2] in chart_secrets[secret_name]["stringData"]
                else:
                    assert secret_name  # an existing Secret, named by the values
    assert "twilio-auth-token" in refs["gateway"]
    assert {"llm-api-key", "database-url", "redis-url"} <= refs["agent"]
    assert {"twilio-account-sid", "twilio-auth-token", "redis-url"} <= refs["escalation"]
    assert {"database-url", "dashboard-auth-secret"} <= refs["dashboard-api"]
    assert {
        "database-url",
        "redis-url",
        "llm-api-key",
        "twilio-account-sid",
        "twilio-auth-token",
        "smtp-password",
    } <= refs["aftercall"]
    # The speech workers hold no secret but their own NATS password.
    for worker in GPU_WORKERS:
        assert refs[worker] == {f"nats-password-{worker}"}
    assert {"database-url"} <= refs["escalation"], "escalation checks staff in the database"
    if chart_secrets:
        # Written even when empty (no SMTP login): a secretKeyRef to a missing key would keep
        # aftercall's pods from starting.
        assert chart_secrets[TRIAL_SECRET]["stringData"]["smtp-password"] == ""
    # Nothing secret travels as a plain value.
    for _, doc in all_value_sets({value_set: docs}):
        if doc["kind"] == "Deployment":
            for key, value in env_of(main_container(doc)).items():
                if isinstance(value, str):
                    assert not re.search(r"TOKEN|API_KEY|PASSWORD|SECRET", key), key


def test_trial_runs_nats_redis_postgres_in_the_release(
    rendered: dict[str, list[Manifest]],
) -> None:
    docs = rendered["cpu-trial"]
    sets = {component(s): s for s in docs if s["kind"] == "StatefulSet"}
    assert set(sets) == {"nats", "redis", "postgresql"}
    services = {component(s): s for s in docs if s["kind"] == "Service"}
    nats = f"nats://{services['nats']['metadata']['name']}:4222"
    for name, dep in deployments(docs).items():
        prefix = settings_class(name).model_config["env_prefix"]
        assert env_of(main_container(dep))[f"{prefix}NATS_URL"] == nats
    (secret,) = of_kind(docs, "Secret").values()
    data = secret["stringData"]
    pg = services["postgresql"]["metadata"]["name"]
    password = data["postgres-password"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    assert (
        data["database-url"] == f"postgresql+asyncpg://dealerline:{password}@{pg}:5432/dealerline"
    )
    redis_password = data["redis-password"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", redis_password)
    assert (
        data["redis-url"]
        == f"redis://:{redis_password}@{services['redis']['metadata']['name']}:6379/0"
    )
    postgres = sets["postgresql"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(postgres)["POSTGRES_PASSWORD"] == (
        "secret",
        secret["metadata"]["name"],
        "postgres-password",
    )
    for sts in sets.values():
        assert sts["spec"]["volumeClaimTemplates"]
        container = sts["spec"]["template"]["spec"]["containers"][0]
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    # Workers run the images with embedded models, on CPU.
    for worker in GPU_WORKERS:
        container = main_container(deployments(docs)[worker])
        assert container["image"].endswith("-models")
        assert env_of(container)[f"{worker.upper()}_DEVICE"] == "cpu"
    (job,) = of_kind(docs, "Job").values()
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "dealerline_common.db upgrade" in command[-1] and "seed" in command[-1]


def test_trial_generates_a_dashboard_auth_secret_or_takes_the_given_one(helm: Helm) -> None:
    """secrets.create makes the dashboard's token-signing secret: random and long enough for
    DashboardSettings when none is given (each install its own), the operator's when given,
    refused when too short for the service to start with."""
    trial = VALUE_SETS["cpu-trial"]
    args = VALUE_SET_ARGS["cpu-trial"]

    def secret_data(docs: list[Manifest]) -> dict[str, str]:
        return of_kind(docs, "Secret")[TRIAL_SECRET]["stringData"]  # type: ignore[no-any-return]

    first = secret_data(helm.template(trial, args))["dashboard-auth-secret"]
    second = secret_data(helm.template(trial, args))["dashboard-auth-secret"]
    assert re.fullmatch(r"[A-Za-z0-9]{48}", first) and re.fullmatch(r"[A-Za-z0-9]{48}", second)
    assert first != second, "generated per install, not a constant of the chart"
    given = "g" * 40
    docs = helm.template(trial, [*args, f"secrets.values.dashboardAuthSecret={given}"])
    assert secret_data(docs)["dashboard-auth-secret"] == given
    error = helm.template_error(trial, [*args, "secrets.values.dashboardAuthSecret=" + "g" * 31])
    assert "dashboardAuthSecret must be at least 32 characters" in error


def test_a_given_nats_password_nats_server_cannot_parse_is_refused(helm: Helm) -> None:
    """nats-server reads a password variable's value as a config token: a leading '-' or an
    all-digit value stops it at start, so the chart refuses such a given password."""
    trial = VALUE_SETS["cpu-trial"]
    args = VALUE_SET_ARGS["cpu-trial"]
    for bad in ("-leadingDash0123456789", "12345678901234567890"):
        error = helm.template_error(trial, [*args, f"secrets.values.natsPasswords.gateway={bad}"])
        assert "natsPasswords.gateway: use letters and digits only" in error
    docs = helm.template(trial, [*args, "secrets.values.natsPasswords.gateway=Good1234abcd5678"])
    assert of_kind(docs, "Secret")


def test_trial_refuses_to_install_without_twilio_credentials(helm: Helm) -> None:
    error = helm.template_error(["values-cpu-trial.yaml"], VALUE_SET_ARGS["cpu-trial"][1:])
    assert "secrets.values.twilioAccountSid is required" in error
    error = helm.template_error(
        ["values-cpu-trial.yaml"], [VALUE_SET_ARGS["cpu-trial"][0], VALUE_SET_ARGS["cpu-trial"][2]]
    )
    assert "secrets.values.twilioAuthToken is required" in error


def test_external_stores_by_default(rendered: dict[str, list[Manifest]]) -> None:
    for value_set in ("defaults", "gpu-production"):
        docs = rendered[value_set]
        assert not of_kind(docs, "StatefulSet")
        assert not of_kind(docs, "Secret"), "production credentials come from an existing Secret"


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_env_vars_are_settings_the_services_read(
    rendered: dict[str, list[Manifest]], value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every prefixed variable the chart sets is a field of the service's settings (a typo
    would be ignored silently: the settings ignore unknown variables), and the settings
    accept the values, secrets filled with samples of the right shape."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    prefixes = {s["name"]: s["envPrefix"] for s in values["services"]}
    pending_used = set()
    for name, dep in deployments(rendered[value_set]).items():
        cls = settings_class(name)
        prefix = str(cls.model_config["env_prefix"])
        assert prefixes[name] == prefix
        known = env_names(cls)
        env = env_of(main_container(dep))
        for key in env:
            if key.startswith(prefix) and key not in known:
                assert key in PENDING_SETTINGS, f"{name}: {cls.__name__} has no setting {key}"
                pending_used.add(key)
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, secret_sample(value[2]) if isinstance(value, tuple) else value)
            settings = cls()
            assert settings.http_port == main_container(dep)["ports"][0]["containerPort"]
            assert settings.drain_timeout_s == float(env[f"{prefix}DRAIN_TIMEOUT_S"])
    if value_set == "defaults":
        assert pending_used == PENDING_SETTINGS - env_names_all(), "stale PENDING_SETTINGS"


def env_names_all() -> set[str]:
    return set().union(*(env_names(settings_class(name)) for name in SETTINGS))


def settings_from(service: str, container: Manifest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings as the pod would build them (secrets filled with samples)."""
    cls = settings_class(service)
    with monkeypatch.context() as m:
        for key, value in env_of(container).items():
            m.setenv(key, secret_sample(value[2]) if isinstance(value, tuple) else value)
        return cls()


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_aftercall_links_texts_and_summarises_like_the_rest_of_the_fleet(
    rendered: dict[str, list[Manifest]], value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aftercall links emails to the public dashboard, texts from the number escalation
    calls from, and summarises with the LLM the agent talks to (base URL and model)."""
    deps = deployments(rendered[value_set])
    aftercall = settings_from("aftercall", main_container(deps["aftercall"]), monkeypatch)
    agent = settings_from("agent", main_container(deps["agent"]), monkeypatch)
    escalation = settings_from("escalation", main_container(deps["escalation"]), monkeypatch)
    gateway = settings_from("gateway", main_container(deps["gateway"]), monkeypatch)
    assert aftercall.dashboard_url == gateway.public_url
    assert aftercall.twilio_from_number == escalation.from_number
    assert (aftercall.llm_base_url, aftercall.llm_model) == (agent.llm_base_url, agent.llm_model)
    assert aftercall.database_url == agent.database_url
    assert aftercall.state_url == agent.state_url


def test_one_llm_setting_reaches_agent_and_aftercall(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = helm.template(sets=["llm.baseUrl=http://vllm.llm:8000/v1", "llm.model=qwen2.5-32b"])
    deps = deployments(docs)
    for service in ("agent", "aftercall"):
        settings = settings_from(service, main_container(deps[service]), monkeypatch)
        assert settings.llm_base_url == "http://vllm.llm:8000/v1", service
        assert settings.llm_model == "qwen2.5-32b", service
    # Unset, the variables are left out (not set empty) and the services' defaults hold.
    defaults = deployments(helm.template())
    for service, prefix in (("agent", "AGENT_"), ("aftercall", "AFTERCALL_")):
        env = env_of(main_container(defaults[service]))
        assert f"{prefix}LLM_BASE_URL" not in env and f"{prefix}LLM_MODEL" not in env
        assert all(value != "" for value in env.values()), service


def test_notifications_configure_aftercall_smtp(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = helm.template(
        sets=[
            "notifications.smtp.host=smtp.dealer.example.com",
            "notifications.smtp.port=2525",
            "notifications.smtp.username=mailer",
            "notifications.smtp.starttls=false",
            "notifications.mailFrom=Sunrise Motors <service@dealer.example.com>",
            "notifications.deskEmail=desk@dealer.example.com",
        ]
    )
    container = main_container(deployments(docs)["aftercall"])
    settings = settings_from("aftercall", container, monkeypatch)
    assert settings.smtp_host == "smtp.dealer.example.com"
    assert settings.smtp_port == 2525
    assert settings.smtp_username == "mailer"
    assert settings.smtp_starttls is False
    assert settings.mail_from == "Sunrise Motors <service@dealer.example.com>"
    assert settings.desk_email == "desk@dealer.example.com"
    assert settings.smtp_password.get_secret_value() == SECRET_SAMPLES["smtp-password"]
    # No SMTP server: no host, so aftercall sends no email (texts are separate).
    default = settings_from(
        "aftercall", main_container(deployments(helm.template())["aftercall"]), monkeypatch
    )
    assert default.smtp_host is None and default.desk_email is None
    error = helm.template_error(sets=["notifications.smtp.host=smtp.dealer.example.com"])
    assert "notifications.mailFrom is required with notifications.smtp.host" in error
    error = helm.template_error(sets=["notifications.smtp.port=0"])
    assert "notifications.smtp.port" in error


# ----------------------------------------------------------------------------- values handling


def test_overrides_merge_by_name_and_false_wins(helm: Helm) -> None:
    """serviceOverrides changes one service; an explicit false/0 in it wins over the
    defaults (sprig's merge would keep the default true)."""
    docs = helm.template(
        sets=[
            "serviceOverrides.escalation.pdb.enabled=false",
            "serviceOverrides.gateway.autoscaling.enabled=false",
            "serviceOverrides.gateway.replicas=3",
            "serviceOverrides.agent.preStopSleepSeconds=0",
            "serviceOverrides.dashboard-api.replicas=0",
        ]
    )
    pdbs = {component(p) for p in docs if p["kind"] == "PodDisruptionBudget"}
    assert "escalation" not in pdbs and "gateway" in pdbs
    deps = deployments(docs)
    assert deps["gateway"]["spec"]["replicas"] == 3
    assert deps["dashboard-api"]["spec"]["replicas"] == 0
    assert "lifecycle" not in main_container(deps["agent"])
    # The rest of the gateway entry is untouched by the override.
    assert env_of(main_container(deps["gateway"]))["GATEWAY_DRAIN_TIMEOUT_S"] == "600"


def test_a_route_to_a_disabled_service_is_refused(helm: Helm) -> None:
    error = helm.template_error(sets=["serviceOverrides.dashboard-api.enabled=false"])
    assert 'service "dashboard-api" is not an enabled entry' in error
    docs = helm.template(
        sets=["serviceOverrides.dashboard-api.enabled=false", "ingress.enabled=false"]
    )
    assert "dashboard-api" not in deployments(docs)
    assert not of_kind(docs, "Ingress")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["serviceOverrides.stt.gpu.enabeld=true"], "Additional property enabeld"),
        (["serviceOverrides.sst.replicas=1"], 'there is no service "sst"'),
        (["secrets.existingSecret="], "set secrets.existingSecret"),
        (["publicUrl=dealer.example.com"], "publicUrl"),
        (["serviceOverrides.stt.models.source=pvc"], "models.existingClaim"),
        (["serviceOverrides.tts.models.source=init"], "models.initContainer.image"),
        (["serviceOverrides.agent.secretEnv.AGENT_X=nope"], "secretEnv"),
        (["serviceOverrides.stt.drainTimeoutSeconds=0"], "drainTimeoutSeconds"),
        (["migrations.service=nope"], "migrations.service"),
        (
            [
                "serviceOverrides.tts.voicePack.existingClaim=voices",
                "serviceOverrides.tts.env.TTS_VOICE=af_bella",
            ],
            "voicePack.existingClaim sets TTS_VOICE; remove it from env",
        ),
        (["serviceOverrides.tts.voicePack.voice=Heart"], "voicePack.voice"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(
    helm: Helm, sets: list[str], message: str
) -> None:
    assert message in helm.template_error(sets=sets)


def test_models_from_an_init_step(helm: Helm) -> None:
    docs = helm.template(
        ["values-gpu-production.yaml"],
        [
            "serviceOverrides.stt.models.source=init",
            "serviceOverrides.stt.models.initContainer.image=registry.example.com/model-sync:1",
            "serviceOverrides.stt.models.initContainer.command={sh,-c,cp -r /src/whisper $MODELS_DIR/}",
        ],
    )
    pod = deployments(docs)["stt"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "registry.example.com/model-sync:1"
    assert env_of(init)["MODELS_DIR"] == "/models"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["models"]
    assert {m["mountPath"] for m in init["volumeMounts"]} >= {"/models"}


def test_the_english_voice_pack_from_a_claim(
    helm: Helm, rendered: dict[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tts.voicePack.existingClaim` mounts the files `dealerline voices` fetched, read-only,
    and points the TTS worker's settings at them; without it, the embedded voices."""
    docs = helm.template(
        ["values-cpu-trial.yaml"],
        [
            *VALUE_SET_ARGS["cpu-trial"],
            "serviceOverrides.tts.voicePack.existingClaim=dealerline-voices",
            "serviceOverrides.tts.voicePack.subPath=kokoro-en",
            "serviceOverrides.tts.voicePack.voice=bf_emma",
        ],
    )
    tts = deployments(docs)["tts"]
    container = main_container(tts)
    volumes = {v["name"]: v for v in tts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["voice-pack"]["persistentVolumeClaim"] == {
        "claimName": "dealerline-voices",
        "readOnly": True,
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["voice-pack"] == {
        "name": "voice-pack",
        "mountPath": "/voices",
        "subPath": "kokoro-en",
        "readOnly": True,
    }
    settings = settings_from("tts", container, monkeypatch)
    assert settings.voices_path == "/voices/voices-v1.0.bin"
    assert settings.model_path == "/voices/kokoro-v1.0.int8.onnx"
    assert settings.voice == "bf_emma"
    for name, dep in deployments(docs).items():  # only the TTS worker gets it
        pod = dep["spec"]["template"]["spec"]
        assert name == "tts" or "voice-pack" not in {v["name"] for v in pod["volumes"]}

    # The embedded model with the English voices: no TTS_MODEL_PATH.
    docs = helm.template(
        sets=[
            "serviceOverrides.tts.voicePack.existingClaim=voices",
            "serviceOverrides.tts.voicePack.modelFile=",
        ]
    )
    env = env_of(main_container(deployments(docs)["tts"]))
    assert "TTS_MODEL_PATH" not in env and env["TTS_VOICE"] == "af_heart"

    # By default: the embedded voices, nothing mounted.
    for value_set in ("defaults", "cpu-trial"):
        tts = deployments(rendered[value_set])["tts"]
        assert "voice-pack" not in {v["name"] for v in tts["spec"]["template"]["spec"]["volumes"]}
        assert "TTS_VOICES_PATH" not in env_of(main_container(tts))


def test_values_are_documented_helm_docs_style() -> None:
    """Every value outside the `services`/`ingress.routes` lists carries a `# --` comment,
    on itself or on an enclosing key (helm-docs renders those)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of enclosing keys
    documented_next = False
    undocumented = []
    in_list = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            documented_next = True
            continue
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            in_list = False
        if in_list or stripped.startswith("- "):
            documented_next = False
            continue
        match = re.match(r"([A-Za-z][\w.-]*):(.*)$", stripped)
        if not match:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = documented_next or any(d for _, d in stack)
        documented_next = False
        if not documented and match.group(2).strip():
            undocumented.append(stripped)
        stack.append((indent, documented))
        if match.group(1) in ("services", "routes") and not match.group(2).strip():
            in_list = True
    assert not undocumented, undocumented


# ----------------------------------------------------------------------------- the bus, locked


def nats_users() -> list[str]:
    """The users of the chart's generated NATS authorization (one per service)."""
    text = (CHART / "files" / "nats-authorization.conf").read_text()
    return re.findall(r'user: "([-a-z0-9]+)"', text)


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_service_is_its_own_nats_user_with_a_secret_password(
    rendered: dict[str, list[Manifest]], value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each service connects as its own least-privilege NATS user (the users of
    dealerline_common.bus.permissions), its password from the Secret, never a plain value."""
    from dealerline_common.bus import NatsAuth
    from dealerline_common.bus.permissions import PERMISSIONS

    assert nats_users() == list(PERMISSIONS)
    for name, dep in deployments(rendered[value_set]).items():
        container = main_container(dep)
        prefix = settings_class(name).model_config["env_prefix"]
        env = env_of(container)
        assert env[f"{prefix}NATS_USER"] == name
        kind, _secret, key = env[f"{prefix}NATS_PASSWORD"]
        assert (kind, key) == ("secret", f"nats-password-{name}")
        auth = NatsAuth.from_settings(settings_from(name, container, monkeypatch))
        assert auth.identified and auth.user == name and auth.password


def test_the_in_chart_nats_refuses_all_but_the_services(
    rendered: dict[str, list[Manifest]],
) -> None:
    """The trial's NATS runs the generated authorization (no anonymous users), each
    password variable set from the chart's Secret, which holds one password per user."""
    docs = rendered["cpu-trial"]
    (config,) = of_kind(docs, "ConfigMap").values()
    generated = (CHART / "files" / "nats-authorization.conf").read_text()
    assert config["data"]["authorization.conf"].strip() == generated.strip()
    assert "include ./authorization.conf" in config["data"]["nats.conf"]
    assert "no_auth_user" not in config["data"]["nats.conf"] + generated
    sts = {component(s): s for s in docs if s["kind"] == "StatefulSet"}["nats"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert "--config=/etc/nats/nats.conf" in container["args"]
    env = env_of(container)
    (secret,) = of_kind(docs, "Secret").values()
    passwords = []
    for user in nats_users():
        variable = "NATS_PASSWORD_" + user.upper().replace("-", "_")
        assert f"password: ${variable}" in generated
        assert env[variable] == ("secret", secret["metadata"]["name"], f"nats-password-{user}")
        passwords.append(secret["stringData"][f"nats-password-{user}"])
    assert all(re.fullmatch(r"[A-Za-z0-9]{32}", p) for p in passwords)
    assert len(set(passwords)) == len(passwords), "each service has its own password"


def test_a_service_without_a_nats_user_is_refused(helm: Helm, tmp_path: Path) -> None:
    """A service added to the chart but not to dealerline_common.bus.permissions has no
    NATS user: the chart says so instead of rendering a pod that cannot connect."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    extra = tmp_path / "extra-service.yaml"
    new = {"name": "newsvc", "envPrefix": "NEWSVC_", "port": 8090}
    extra.write_text(yaml.safe_dump({"services": [*values["services"], new]}))
    result = helm.run(*helm._template_args([], []), "-f", str(extra))
    assert result.returncode != 0
    assert 'no NATS user "newsvc"' in result.stderr


def test_nats_over_tls(helm: Helm) -> None:
    """nats.tls: tls:// URLs, the CA mounted in every service and named in its settings,
    the in-chart server serving its certificate; refused without the certificate's Secret."""
    trial = VALUE_SETS["cpu-trial"]
    args = [*VALUE_SET_ARGS["cpu-trial"], "nats.tls.enabled=true", "nats.tls.secretName=nats-tls"]
    docs = helm.template(trial, args)
    nats_service = of_kind(docs, "Service")[f"{RELEASE}-dealerline-nats"]["metadata"]["name"]
    for name, dep in deployments(docs).items():
        env = env_of(main_container(dep))
        prefix = settings_class(name).model_config["env_prefix"]
        assert env[f"{prefix}NATS_URL"] == f"tls://{nats_service}:4222"
        assert env[f"{prefix}NATS_TLS_CA_FILE"] == "/etc/dealerline/nats-tls/ca.crt"
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert volumes["nats-tls"]["secret"]["secretName"] == "nats-tls"
    (config,) = of_kind(docs, "ConfigMap").values()
    assert "cert_file: /etc/nats-tls/tls.crt" in config["data"]["nats.conf"]
    plain = helm.template(trial, VALUE_SET_ARGS["cpu-trial"])
    assert "tls" not in of_kind(plain, "ConfigMap")[config["metadata"]["name"]]["data"]["nats.conf"]
    error = helm.template_error(trial, [*VALUE_SET_ARGS["cpu-trial"], "nats.tls.enabled=true"])
    assert "nats.tls.secretName is required" in error


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_dashboard_logins_are_counted_per_client_behind_the_ingress(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    """Behind the ingress every login arrives from the controller's address: the dashboard
    must believe the controller's X-Forwarded-For, or one outsider would use up every
    staff member's login budget (and lock them out)."""
    env = env_of(main_container(deployments(rendered[value_set])["dashboard-api"]))
    proxies = [ipaddress.ip_network(p) for p in json.loads(env["DASHBOARD_TRUSTED_PROXIES"])]
    assert proxies, "no trusted proxies: every login would count as the ingress's"
    assert all(p.is_private or p.subnet_of(ipaddress.ip_network("100.64.0.0/10")) for p in proxies)
    assert isinstance(env["DASHBOARD_STATE_URL"], tuple)  # limits shared through Redis


def test_the_in_chart_redis_requires_the_password_every_url_carries(
    rendered: dict[str, list[Manifest]], helm: Helm
) -> None:
    docs = rendered["cpu-trial"]
    (secret,) = of_kind(docs, "Secret").values()
    data = secret["stringData"]
    redis = {component(s): s for s in docs if s["kind"] == "StatefulSet"}["redis"]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    env = env_of(container)
    ref = ("secret", secret["metadata"]["name"], "redis-password")
    assert env["REDIS_PASSWORD"] == ref and env["REDISCLI_AUTH"] == ref
    assert data["redis-url"].startswith(f"redis://:{data['redis-password']}@")
    users = 0
    for name, dep in deployments(docs).items():
        for key, value in env_of(main_container(dep)).items():
            if isinstance(value, tuple) and value[2] == "redis-url":
                users += 1
                assert key.endswith("STATE_URL"), (name, key)
    assert users == 4  # agent, escalation, aftercall, dashboard-api (login limits)
    # Turned off, the server takes no password and the URL carries none.
    off = helm.template(
        VALUE_SETS["cpu-trial"], [*VALUE_SET_ARGS["cpu-trial"], "redis.auth.enabled=false"]
    )
    (secret_off,) = of_kind(off, "Secret").values()
    assert "redis-password" not in secret_off["stringData"]
    assert secret_off["stringData"]["redis-url"].startswith("redis://dl-")


def policies_selecting(docs: list[Manifest], labels: dict[str, str]) -> list[Manifest]:
    return [
        p
        for p in docs
        if p["kind"] == "NetworkPolicy" and selects(p["spec"]["podSelector"]["matchLabels"], labels)
    ]


def egress_ports(policies: list[Manifest]) -> set[int]:
    return {
        port["port"]
        for p in policies
        for rule in p["spec"].get("egress", [])
        for port in rule.get("ports", [])
    }


def ingress_rules(policies: list[Manifest]) -> list[Manifest]:
    return [rule for p in policies for rule in p["spec"].get("ingress", [])]


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_default_deny_and_only_the_fleets_flows(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    docs = rendered[value_set]
    pods = {
        component(d): d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    }
    deny = of_kind(docs, "NetworkPolicy")[f"{RELEASE}-dealerline-default-deny"]["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for name, labels in pods.items():
        assert selects(deny["podSelector"]["matchLabels"], labels), f"{name} is not denied"
        assert len(policies_selecting(docs, labels)) >= 2, f"{name} has no allow rules"
    controller = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"][
        "ingressControllers"
    ]
    redis_users = ("agent", "escalation", "aftercall", "dashboard-api")
    for name in SETTINGS:
        policies = policies_selecting(docs, pods[name])
        ports = egress_ports(policies)
        assert {53, 4222} <= ports, name
        # Only the services that call out reach port 443 (Twilio, the LLM).
        assert (443 in ports) == (name in ("agent", "escalation", "aftercall")), name
        assert (6379 in ports) == (name in redis_users), name
        assert (5432 in ports) == (name in ("agent", "escalation", "dashboard-api", "aftercall"))
        public = [r for r in ingress_rules(policies) if r["from"] == controller]
        assert bool(public) == (name in ("gateway", "escalation", "dashboard-api")), name
    for worker in GPU_WORKERS:
        assert egress_ports(policies_selecting(docs, pods[worker])) == {53, 4222}
    if value_set == "cpu-trial":
        nats_in = ingress_rules(policies_selecting(docs, pods["nats"]))
        (rule,) = nats_in
        (peer,) = rule["from"]
        (expr,) = peer["podSelector"]["matchExpressions"]
        assert set(expr["values"]) == set(SETTINGS)
        redis_in = ingress_rules(policies_selecting(docs, pods["redis"]))
        selected = redis_in[0]["from"][0]["podSelector"]["matchExpressions"][0]["values"]
        assert set(selected) == set(redis_users)
        assert egress_ports(policies_selecting(docs, pods["migrations"])) == {53, 5432}


def test_network_policies_follow_the_values(helm: Helm) -> None:
    docs = helm.template(
        sets=[
            "networkPolicy.ingressControllers[0].namespaceSelector.matchLabels.team=edge",
            "llm.baseUrl=http://vllm.llm:8000/v1",
            "networkPolicy.egressPorts.stt={8443}",
        ]
    )
    policies = of_kind(docs, "NetworkPolicy")
    gateway = policies[f"{RELEASE}-dealerline-gateway"]["spec"]
    assert any(
        peer.get("namespaceSelector", {}).get("matchLabels", {}).get("team") == "edge"
        for rule in gateway["ingress"]
        for peer in rule["from"]
    )
    assert 8000 in egress_ports([policies[f"{RELEASE}-dealerline-agent"]])
    assert 8443 in egress_ports([policies[f"{RELEASE}-dealerline-stt"]])
    assert not of_kind(helm.template(sets=["networkPolicy.enabled=false"]), "NetworkPolicy")


def test_relaxed_stream_signatures_are_never_set(rendered: dict[str, list[Manifest]]) -> None:
    """GATEWAY_ALLOW_UNSIGNED_STREAMS is for local development only: no value set sets it."""
    for _, doc in all_value_sets(rendered):
        if doc["kind"] == "Deployment":
            assert "GATEWAY_ALLOW_UNSIGNED_STREAMS" not in env_of(main_container(doc))
    for path in CHART.rglob("*.yaml"):
        assert "ALLOW_UNSIGNED" not in path.read_text(), path


def test_security_values_refuse_typos() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    validator.validate(values)
    for typo in (
        {"networkPolicy": {**values["networkPolicy"], "enable": True}},
        {"nats": {**values["nats"], "auth": {"enabeld": True}}},
        {"redis": {**values["redis"], "auth": {"password": "x"}}},
        {"networkPolicy": {**values["networkPolicy"], "egressPorts": {"agent": ["https"]}}},
    ):
        assert not validator.is_valid({**values, **typo}), typo
