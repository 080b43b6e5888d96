"""The deployment files, checked with tools that run without Docker or a cluster.

- compose: the Compose Specification schema Docker Compose itself uses (compose-go, shipped in
  deploy/compose/), validated with `jsonschema`, plus quantrac's rules (restart policies,
  healthchecks, secrets only from env files, one client id per bridge).
- Kubernetes: kubeconform (installed into .tools/ by `make validators`, or here when missing)
  against the Kubernetes JSON schemas shipped by the `kubernetes-validate` package, made
  standalone for kubeconform, plus quantrac's rules (probes on /healthz, requests and limits,
  PodDisruptionBudgets, autoscaling no further than the topic's partitions).
- Prometheus rules and the Grafana dashboard only name metrics that quantrac.metrics defines.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml

from quantrac import metrics
from quantrac.settings import REPO_ROOT, Settings

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
KUBECONFORM_VERSION = "v0.6.7"
KUBERNETES_VERSION = "1.33.0"
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|_KEY$", re.IGNORECASE)
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$")


# --- compose -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def compose_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads((COMPOSE / "compose-spec.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    assert compose_errors(compose) == []


def test_compose_schema_check_rejects_a_broken_file(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["restart_policy"] = "always"  # not a compose key
    broken["services"]["worker"]["depends_on"]["kafka"]["condition"] = "service_started_maybe"
    errors = compose_errors(broken)
    assert any("restart_policy" in e for e in errors), errors
    assert any("depends_on" in e for e in errors), errors


def test_every_compose_service_has_a_restart_policy_and_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, f"{name}: set a restart policy"
        check = service.get("healthcheck")
        assert check, f"{name}: add a healthcheck"
        if check.get("disable"):
            assert service["restart"] == "on-failure", f"{name}: only one-shot jobs may go without a healthcheck"
            assert any(dep.get("condition") == "service_completed_successfully"
                       for other in compose["services"].values() for dep_name, dep in other.get("depends_on", {}).items()
                       if dep_name == name), f"{name}: a one-shot job must be awaited by the services after it"
            continue
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck test must be CMD or CMD-SHELL"
        for key in ("interval", "timeout", "start_period"):
            if key in check:
                assert GO_DURATION.match(check[key]), f"{name}: healthcheck {key}={check[key]!r} is not a duration"


def test_compose_secrets_come_from_env_files_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env)
        for key, value in items:
            assert not SECRET_KEY.search(key), f"{name}: {key} must come from an env file, not compose.yaml (value {value!r})"
    text = (COMPOSE / "compose.yaml").read_text()
    assert not re.search(r"(?i)password\s*[:=]\s*['\"]?[A-Za-z0-9]", text.replace("QUANTRAC_MQTT_PASSWORD", "")), \
        "a literal password in compose.yaml"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/"), "secret files live under the git-ignored secrets/ folder"


def test_env_example_holds_no_real_secret_and_env_is_ignored(compose: dict[str, Any]) -> None:
    pairs = [line.split("=", 1) for line in (COMPOSE / ".env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    secrets = {k: v for k, v in pairs if SECRET_KEY.search(k)}
    assert secrets and set(secrets.values()) == {"change-me"}, secrets
    for name, service in compose["services"].items():
        if name not in {"kafka", "prometheus"}:  # the only services without a secret
            assert service.get("env_file") == [".env"], f"{name}: read secrets from .env"
    ignored = subprocess.run(["git", "check-ignore", "deploy/compose/.env", "deploy/compose/secrets/tls/server.key"],
                             cwd=REPO_ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == ["deploy/compose/.env", "deploy/compose/secrets/tls/server.key"], ignored


def test_compose_scales_bridges_on_a_shared_subscription_and_workers_in_one_group(compose: dict[str, Any]) -> None:
    services = compose["services"]
    bridges = {n: s for n, s in services.items() if s.get("command") == ["bridge"]}
    assert len(bridges) >= 2
    client_ids = [s["environment"]["QUANTRAC_MQTT_BRIDGE_CLIENT_ID"] for s in bridges.values()]
    assert len(set(client_ids)) == len(client_ids), "each bridge needs its own persistent MQTT session"
    assert {s["environment"]["QUANTRAC_MQTT_SHARED_GROUP"] for s in bridges.values()} == {"quantrac-bridges"}
    worker = services["worker"]
    partitions = int(worker["environment"]["QUANTRAC_TOPIC_PARTITIONS"])
    assert partitions >= 6
    assert 2 <= worker["deploy"]["replicas"] <= partitions
    assert "QUANTRAC_WORKER_ID" not in worker["environment"], "replicas must share the default consumer group"


def test_compose_mounts_exist_and_mosquitto_is_locked_down(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name}: {source} does not exist"
    conf = (COMPOSE / "mosquitto" / "mosquitto.conf").read_text()
    for line in ("allow_anonymous false", "password_file", "acl_file", "listener 8883", "certfile", "keyfile",
                 "persistence true", "autosave_interval 10", "max_queued_messages 1000000"):
        assert line in conf, f"mosquitto.conf lacks {line!r}"
    acl = (COMPOSE / "mosquitto" / "acl").read_text()
    assert "pattern write quantrac/v1/stations/%u/readings" in acl
    assert "topic read quantrac/v1/stations/+/readings" in acl


def _persistence(conf: str) -> list[str]:
    return sorted(line.strip() for line in conf.splitlines() if line.strip().startswith(("persistence", "autosave")))


def test_every_deployed_broker_saves_by_time_not_on_every_change() -> None:
    """Mosquitto saves its whole database, queue included: saved every N changes, a backlog (Kafka or the bridges
    away) is rewritten every N messages and the broker slows to a crawl (bench/broker_persistence.py)."""
    compose = (COMPOSE / "mosquitto" / "mosquitto.conf").read_text()
    k8s = next(d for d in yaml.safe_load_all((DEPLOY / "k8s" / "10-mosquitto.yaml").read_text())
               if d and d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "mosquitto-config")
    local = (DEPLOY / "local" / "mosquitto.conf").read_text()
    for conf in (compose, k8s["data"]["mosquitto.conf"], local):
        assert "autosave_interval 10" in _persistence(conf) and "autosave_on_changes true" not in conf
    assert _persistence(compose) == _persistence(k8s["data"]["mosquitto.conf"])


def test_dockerfile_copies_what_exists() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    sources = [line.split()[1] for line in text.splitlines() if line.startswith("COPY") and "--from" not in line]
    assert sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    assert "USER 10001" in text


# --- Kubernetes ----------------------------------------------------------------------------------

def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def schema_file_name(kind: str, api_version: str) -> str:
    """kubeconform's file naming: kind-group-version.json (core group: kind-version.json)."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def standalone_schema(kind_schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """The kind's schema with every definition it reaches inlined under `definitions`.

    kubernetes-validate ships schemas that point into a shared `/api/_definitions.json`, a
    reference kubeconform cannot follow from a local folder; rewriting them to local
    `#/definitions/...` makes each file self-contained."""
    ref = re.compile(r'"\$ref": "(?:/api/_definitions\.json)?#/\$defs/([^"]+)"')
    needed: dict[str, Any] = {}
    todo = ref.findall(json.dumps(kind_schema))
    while todo:
        name = todo.pop()
        if name not in needed:
            needed[name] = definitions[name]
            todo.extend(ref.findall(json.dumps(definitions[name])))
    body = {k: v for k, v in kind_schema.items() if k not in ("$schema", "$id")}
    body["definitions"] = needed
    return json.loads(ref.sub(r'"$ref": "#/definitions/\1"', json.dumps(body)))


@pytest.fixture(scope="module")
def schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    assert source.is_dir(), f"kubernetes-validate has no schemas for {KUBERNETES_VERSION}; pick one of its versions"
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    out = tmp_path_factory.mktemp("k8s-schemas") / f"v{KUBERNETES_VERSION}-standalone-strict"
    out.mkdir()
    for _path, doc in k8s_documents():
        name = schema_file_name(doc["kind"], doc["apiVersion"])
        (out / name).write_text(json.dumps(standalone_schema(json.loads((source / name).read_text()), definitions)))
    return out.parent


@pytest.fixture(scope="module")
def kubeconform() -> Path:
    """The pinned kubeconform binary; built with `go install` when `make validators` has not run."""
    binary = REPO_ROOT / ".tools" / "bin" / "kubeconform"
    if not binary.exists():
        go = shutil.which("go") or "/usr/local/go/bin/go"
        assert Path(go).exists(), "kubeconform is missing and there is no Go toolchain: run `make validators`"
        subprocess.run([go, "install", f"github.com/yannh/kubeconform/cmd/kubeconform@{KUBECONFORM_VERSION}"],
                       env={**os.environ, "GOBIN": str(binary.parent)}, check=True, timeout=600)
    return binary


def run_kubeconform(kubeconform: Path, schema_dir: Path, paths: list[Path]) -> dict[str, Any]:
    location = str(schema_dir) + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    done = subprocess.run([str(kubeconform), "-strict", "-summary", "-output", "json", "-kubernetes-version",
                           KUBERNETES_VERSION, "-schema-location", location, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    return {"code": done.returncode, **json.loads(done.stdout)}


def test_kubernetes_manifests_pass_kubeconform(kubeconform: Path, schema_dir: Path) -> None:
    report = run_kubeconform(kubeconform, schema_dir, [K8S])
    summary = report["summary"]
    assert report["code"] == 0 and summary["invalid"] == 0 and summary["errors"] == 0, report["resources"]
    assert summary["skipped"] == 0, "every resource must be checked against a schema"
    assert summary["valid"] == len(k8s_documents())


def test_kubeconform_rejects_a_broken_manifest(kubeconform: Path, schema_dir: Path, tmp_path: Path) -> None:
    deployment = next(doc for _p, doc in k8s_documents() if doc["kind"] == "Deployment")
    wrong_type, unknown_field = copy.deepcopy(deployment), copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    unknown_field["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/healthz"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump_all([wrong_type, unknown_field]))
    report = run_kubeconform(kubeconform, schema_dir, [tmp_path / "broken.yaml"])
    assert report["code"] != 0 and report["summary"]["invalid"] == 2, report
    messages = " ".join(r["msg"] for r in report["resources"])
    assert "/spec/replicas" in messages and "'pathh' not allowed" in messages, messages


def workloads() -> Iterator[tuple[str, dict[str, Any]]]:
    for _path, doc in k8s_documents():
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield doc["metadata"]["name"], doc


def test_every_container_has_requests_and_limits() -> None:
    for name, doc in workloads():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            resources = container.get("resources", {})
            for key in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(key, {})), f"{name}/{container['name']}: set {key}"


def test_quantrac_processes_probe_healthz_and_have_disruption_budgets() -> None:
    docs = [doc for _p, doc in k8s_documents()]
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    services = [(n, d) for n, d in workloads() if n in {"quantrac-bridge", "quantrac-worker", "quantrac-api"}]
    assert len(services) == 3
    for name, doc in services:
        container = doc["spec"]["template"]["spec"]["containers"][0]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/healthz", f"{name}: {probe} on /healthz"
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert any(b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets), f"{name}: add a PDB"
        assert doc["spec"]["replicas"] >= 2


def test_workers_autoscale_on_lag_and_cpu_within_the_partitions() -> None:
    docs = [doc for _p, doc in k8s_documents()]
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler" and d["metadata"]["name"] == "quantrac-worker")
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "quantrac-config")
    assert hpa["spec"]["maxReplicas"] <= int(config["data"]["QUANTRAC_TOPIC_PARTITIONS"])
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["External"]["external"]["metric"]["name"] == metrics.WORKER_CONSUMER_LAG._name  # noqa: SLF001
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    bridge = next(d for n, d in workloads() if n == "quantrac-bridge")
    assert bridge["kind"] == "StatefulSet", "bridges need stable client ids (their persistent MQTT sessions)"
    env = {e["name"]: e for e in bridge["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["QUANTRAC_MQTT_BRIDGE_CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_kubernetes_config_names_real_settings_and_no_secret() -> None:
    config = next(d for _p, d in k8s_documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "quantrac-config")
    known = {f"QUANTRAC_{name.upper()}" for name in Settings.model_fields}
    assert set(config["data"]) <= known, set(config["data"]) - known
    assert not [k for k in config["data"] if SECRET_KEY.search(k)]
    assert not [d for _p, d in k8s_documents() if d["kind"] == "Secret"], "secrets are created by the operator, not shipped"


# --- Prometheus and Grafana ----------------------------------------------------------------------

def defined_metric_names() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        if hasattr(value, "_name") and hasattr(value, "_type"):
            base = value._name  # noqa: SLF001
            names.add(base)
            names.update({f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"})
    return names


def used_metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bquantrac_[a-z_]+", text))


def test_prometheus_rules_and_dashboard_use_defined_metrics(compose: dict[str, Any]) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "quantrac.json").read_text())
    panel_exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    defined = defined_metric_names()
    for source, text in (("rules.yml", exprs), ("quantrac.json", panel_exprs)):
        unknown = used_metric_names(text) - defined
        assert not unknown, f"{source} names metrics quantrac does not export: {unknown}"
    for name in ("quantrac_worker_consumer_lag", "quantrac_deadletters_total", "quantrac_worker_write_seconds_bucket",
                 "quantrac_worker_batch_records_bucket", "quantrac_alerts", "quantrac_notification_failures_total",
                 "quantrac_bridge_stranded", "quantrac_bridge_silent_seconds"):
        assert name in panel_exprs, f"the dashboard should chart {name}"


def test_a_stranded_bridge_alert_names_the_drain_command() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    alert = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "QuantracBridgeStranded")
    assert "quantrac_bridge_stranded" in alert["expr"] and "client_id" in alert["expr"]
    assert "quantrac bridge drain {{ $labels.client_id }}" in alert["annotations"]["description"]
    bridge = next(d for n, d in workloads() if n == "quantrac-bridge")
    env = {e["name"]: e.get("value") for e in bridge["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["QUANTRAC_BRIDGE_ON_STOP"] == "keep", "StatefulSet pods come back under their name: keep the session"


def test_prometheus_scrapes_the_compose_services(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    hosts = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            hosts.update(t.split(":")[0] for t in static["targets"])
        for dns in job.get("dns_sd_configs", []):
            hosts.update(dns["names"])
    hosts.discard("127.0.0.1")
    assert hosts == {n for n, s in compose["services"].items() if s.get("command") in (["bridge"], ["worker"], ["api"])}


def test_grafana_dashboard_is_provisioned_with_its_datasource() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "quantrac.json").read_text())
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    uid = source["datasources"][0]["uid"]
    assert dashboard["uid"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
