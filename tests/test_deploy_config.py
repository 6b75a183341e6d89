"""deploy/ is validated offline by scripts/check-deploy-config.sh (promtool config, rules and rule unit tests; kustomize
overlays against the Kubernetes schemas; compose.yaml resolved and checked against the compose schema), and stays tied
to the app: the alert rules read metrics the service really exports, the probes and the scrape hit its public paths,
the env template names what the code reads. A broken rule, manifest or compose file makes the check fail."""
import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from atf.serving.app import PUBLIC_PATHS, ServeConfig, ServeConfigError, create_app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SCRIPT = ROOT / "scripts" / "check-deploy-config.sh"
pytestmark = pytest.mark.xdist_group("deploy_config")     # one worker: the full check below runs once

OVERLAYS = sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir() if p.is_dir())


def run_check(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict[str, list[dict]]]:
    "One full run of the check, keeping the rendered overlays: (the run, {overlay: its manifests})."
    out = tmp_path_factory.mktemp("rendered")
    res = run_check("--render-to", str(out))
    docs = {p.stem: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in out.glob("*.yaml")}
    return res, docs


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} manifests"
    return found[0]


# ---------------------------------------------------------------------------------------------------------- the check
def test_every_deploy_check_passes(checked):
    res, docs = checked
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    expected = ["promtool check config", "promtool check rules", "promtool test rules",
                *[f"kubectl kustomize k8s/overlays/{o}" for o in OVERLAYS], "kubernetes-validate --strict",
                "podman-compose config", "check-jsonschema vendor.compose-spec"]
    for name in expected:
        assert any(l.startswith("ok   " + name) for l in lines), f"no passing check '{name}' in:\n{res.stdout}"
    assert lines[-1] == f"deploy config: {len(expected)} checks passed"
    assert sorted(docs) == OVERLAYS and OVERLAYS == ["production", "staging"]


def test_help_and_usage_errors():
    res = run_check("--help")
    assert res.returncode == 0 and "Usage: scripts/check-deploy-config.sh" in res.stdout
    res = run_check("--only", "helm")
    assert res.returncode == 2 and "--only takes prometheus, k8s or compose, not 'helm'" in res.stderr


# ------------------------------------------------------------------------------------- metrics the rules read are real
_GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    "The metric names a PromQL expression selects: identifiers that are not functions, keywords or label names."
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)         # strings (label values: "/predict", "5..")
    e = re.sub(r"\{[^}]*\}", " ", e)                      # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                     # range durations
    e = re.sub(_GROUPING, " ", e)                         # grouping label lists
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if m.group(0) in _KEYWORDS or e[m.end():].lstrip().startswith("("): continue   # keyword, or a function call
        names.add(m.group(0))
    return names


def test_metric_name_extraction():
    expr = 'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{path="/p", le!="x"}[5m]))) > 0.25 ' \
           'and on (job) group_left max without (instance) (b) / ignoring(x) c_total offset 5m unless up{job="atf"} == bool 1'
    assert metric_names(expr) == {"a_bucket", "b", "c_total", "up"}


def exported_series() -> set[str]:
    "The series names the service's /metrics can hold, from the families a real app exports (by their type)."
    client = TestClient(create_app(ServeConfig(api_key="test-key")))
    res = client.get("/metrics")                          # public: no key
    assert res.status_code == 200
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",), "summary": ("", "_count", "_sum", "_created")}
    names = set()
    for fam in text_string_to_metric_families(res.text):
        names |= {fam.name + s for s in suffixes.get(fam.type, ("",))} | {s.name for s in fam.samples}
    return names


def test_alert_rules_read_only_metrics_the_app_exports():
    rules = [r for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    exported = exported_series() | {"up"}                 # `up`: Prometheus' own, per scrape target
    used = {}
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in its expression"
        assert names <= exported, f"{rule['alert']} reads {sorted(names - exported)}, which the app does not export"
        used[rule["alert"]] = names
    everything = set().union(*used.values())
    for needed in ("atf_request_latency_seconds_bucket", "atf_failovers_total", "atf_drift_detected", "atf_drift_psi",
                   "atf_model_ready", "up", "atf_circuit_open", "atf_requests_total"):
        assert needed in everything, f"no alert reads {needed}"
    assert "histogram_quantile(0.99" in next(r["expr"] for r in rules if "atf_request_latency_seconds_bucket" in used[r["alert"]])


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    rules = {r["alert"] for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert rules == fires == quiet
    for t in tests:       # beside each firing series a "good" one that must not fire: every expected alert is "bad"
        instances = {re.search(r'instance="([^"]+)"', s["series"]).group(1) for s in t["input_series"]}
        assert {"bad", "good"} <= instances
        assert all(a["exp_labels"]["instance"] == "bad" for c in t["alert_rule_test"] for a in c["exp_alerts"])


# ----------------------------------------------------------------------------------------- probes hit the public paths
def test_probes_and_scrape_use_the_apps_public_paths(checked):
    _, docs = checked
    client = TestClient(create_app(ServeConfig(api_key="test-key")))
    assert {p: client.get(p).status_code for p in PUBLIC_PATHS} == {"/health": 200, "/ready": 503, "/metrics": 200}
    assert client.get("/status").status_code == 401      # the rest needs the key: probes must not go there
    for overlay, manifests in docs.items():
        pod = one(manifests, "Deployment")["spec"]["template"]
        (c,) = pod["spec"]["containers"]
        port = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and c["livenessProbe"]["httpGet"]["path"] == "/health"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            get = c[probe]["httpGet"]
            assert get["path"] in PUBLIC_PATHS, f"{overlay}: {probe} on {get['path']}, which needs the API key"
            assert port[get["port"]] == int({e["name"]: e.get("value") for e in c["env"]}["PORT"])
        ann = pod["metadata"]["annotations"]
        assert ann["prometheus.io/path"] in PUBLIC_PATHS and int(ann["prometheus.io/port"]) == port["http"]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert [s["metrics_path"] for s in scrape] == ["/metrics"] and "/metrics" in PUBLIC_PATHS


# ------------------------------------------------------------------------------------------------------------- k8s
def test_k8s_runs_as_the_image_user_read_only_with_limits(checked):
    _, docs = checked
    uid = int(re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))
    for overlay, manifests in docs.items():
        spec = one(manifests, "Deployment")["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == uid
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}, f"{overlay}: resources.{kind}"
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/model"].get("readOnly") is True
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols[mounts["/model"]["name"]]["persistentVolumeClaim"]["readOnly"] is True
        claim = vols[mounts["/model"]["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim in {d["metadata"]["name"] for d in manifests if d["kind"] == "PersistentVolumeClaim"}


def test_the_api_key_comes_from_a_generated_secret_never_committed(checked):
    _, docs = checked
    for overlay, manifests in docs.items():
        (c,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
        ref = next(e for e in c["env"] if e["name"] == "ATF_API_KEY")["valueFrom"]["secretKeyRef"]
        secret = one(manifests, "Secret")
        assert secret["metadata"]["name"] == ref["name"], f"{overlay}: the Deployment names another Secret"
        assert re.fullmatch(r"atf-api-key-[a-z0-9]{10}", ref["name"])     # kustomize's hash: a new key rolls the pods
        assert base64.b64decode(secret["data"][ref["key"]]) == b"placeholder-key-for-offline-checks"
    committed = [p for p in (DEPLOY / "k8s").rglob("*.yaml") if any(
        d and d.get("kind") == "Secret" for d in yaml.safe_load_all(p.read_text()))]
    assert committed == []
    for overlay in OVERLAYS:        # the file the operator or CI writes the key to is ignored by git
        kust = yaml.safe_load((DEPLOY / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text())
        (gen,) = kust["secretGenerator"]
        (entry,) = gen["files"]
        key_file = f"deploy/k8s/overlays/{overlay}/{entry.split('=', 1)[1]}"
        assert subprocess.run(["git", "check-ignore", "-q", key_file], cwd=ROOT).returncode == 0, f"{key_file} is not ignored"


def test_overlays_differ_where_they_should(checked):
    _, docs = checked
    dep = {o: one(m, "Deployment") for o, m in docs.items()}
    assert {o: d["metadata"]["namespace"] for o, d in dep.items()} == {"staging": "atf-staging", "production": "atf-production"}
    assert dep["staging"]["spec"]["replicas"] == 1 and dep["production"]["spec"]["replicas"] == 3
    image = dep["production"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"ghcr\.io/[\w.-]+/atf-serve@sha256:[0-9a-f]{64}", image), image   # production: a digest
    pdb = one(docs["production"], "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] < dep["production"]["spec"]["replicas"]      # a drain can still go on
    assert pdb["spec"]["selector"]["matchLabels"] == dep["production"]["spec"]["selector"]["matchLabels"]
    for o, d in dep.items():
        assert all(x["metadata"]["namespace"] == f"atf-{o}" for x in docs[o] if x["kind"] != "Namespace")


# ------------------------------------------------------------------------------------------------- env and compose
def template() -> dict[str, str]:
    "NAME -> value of deploy/atf.env.example, commented-out defaults (#NAME=value) included."
    return {m.group(1): m.group(2) for m in re.finditer(r"(?m)^#?([A-Z][A-Z0-9_]*)=(.*)$",
                                                       (DEPLOY / "atf.env.example").read_text())}


def test_env_template_names_exactly_what_the_code_and_compose_read():
    code = "\n".join(p.read_text() for p in (ROOT / "atf" / "serving").glob("*.py"))
    service = set(re.findall(r'environ\[\s*"(\w+)"\s*\]|environ\.get\(\s*"(\w+)"|env\.get\(\s*"(\w+)"', code))
    service = {n for group in service for n in group if n}
    service |= set(re.findall(r'"\$(\w+)"', re.search(r"^ENTRYPOINT .*$", (ROOT / "Dockerfile").read_text(), re.M).group(0)))
    compose = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    assert {"ATF_API_KEY", "HOST", "PORT"} <= service and {"ATF_IMAGE", "ATF_MODEL_DIR"} <= compose
    names = set(template())
    assert service - names == set(), f"the service reads {sorted(service - names)}, not in the template"
    assert compose - names == set(), f"compose.yaml reads {sorted(compose - names)}, not in the template"
    assert names - service - compose == set(), f"the template names {sorted(names - service - compose)}, which nothing reads"


def test_env_template_holds_no_key_and_an_unedited_one_refuses_to_start(monkeypatch):
    env = template()
    assert env["ATF_API_KEY"] == ""
    # the filled-in copy holds the key: git must ignore it
    assert subprocess.run(["git", "check-ignore", "-q", "deploy/atf.env"], cwd=ROOT).returncode == 0, "deploy/atf.env is not ignored"
    monkeypatch.setenv("ATF_API_KEY", env["ATF_API_KEY"])
    with pytest.raises(ServeConfigError, match="the API key is empty"):
        ServeConfig.from_env()
    monkeypatch.setenv("ATF_API_KEY", "operator-key")
    assert ServeConfig.from_env().api_key == "operator-key"


def test_compose_wires_the_service_prometheus_and_rules_together():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    serve, prom = compose["services"]["atf-serve"], compose["services"]["prometheus"]
    assert serve["env_file"] == ["atf.env"] and serve["read_only"] is True and serve["user"] == "10001"
    (model,) = serve["volumes"]
    assert model["target"] == "/model" and model["read_only"] is True
    docker_check = re.search(r'HEALTHCHECK .*\n\s*CMD (\[.*\])', (ROOT / "Dockerfile").read_text()).group(1)
    assert serve["healthcheck"]["test"] == ["CMD", *yaml.safe_load(docker_check)]
    container_port = serve["ports"][0].rsplit(":", 1)[1]
    mounted = {v.split(":")[1]: DEPLOY / v.split(":")[0] for v in prom["volumes"] if v.startswith("./")}
    assert all(p.is_file() for p in mounted.values()) and "/etc/prometheus/alerts.yml" in mounted
    config = yaml.safe_load(mounted["/etc/prometheus/prometheus.yml"].read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"atf-serve:{container_port}"]
    assert f'up{{job="{job["job_name"]}"}}' in (DEPLOY / "prometheus" / "alerts.yml").read_text()


# ------------------------------------------------------------------------------------------- broken files are caught
@pytest.mark.parametrize("group, path, old, new, failing", [
    ("prometheus", "prometheus/alerts.yml", ") > 0.25", ") > 25", "promtool test rules"),              # never fires
    ("prometheus", "prometheus/alerts.yml", "        for: 10m\n", "", "promtool test rules"),         # fires too soon
    ("prometheus", "prometheus/alerts.yml", "max by (job, instance) (atf_circuit_open)",
     "max by (job, instance) (atf_circuit_opened)", "promtool test rules"),                             # wrong metric
    ("prometheus", "prometheus/alerts.yml", "max by (job, instance) (atf_model_ready)",
     "max by (job, instance (atf_model_ready)", "promtool check rules"),                                # bad PromQL
    ("prometheus", "prometheus/alerts.yml", 'seconds_bucket{path="/predict"}', "seconds_bucket",
     "promtool test rules"),                                                      # slow probes count: good fires
    ("prometheus", "prometheus/alerts.yml", '{status=~"5..", path!~"/health|/ready|/metrics"}', '{status=~"5.."}',
     "promtool test rules"),                                                      # /ready's 503s count: good fires
    ("prometheus", "prometheus/prometheus.yml", "scrape_interval: 15s", "scrape_interval: soon", "promtool check config"),
    ("k8s", "k8s/base/deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true",
     "kubernetes-validate"),                                                                            # unknown field
    ("k8s", "k8s/overlays/production/kustomization.yaml", "- path: deployment-patch.yaml", "- path: missing.yaml",
     "kubectl kustomize k8s/overlays/production"),
    ("compose", "atf.env.example", "\nATF_MODEL_DIR=\n", "\n", "podman-compose config"),               # required var unset
    ("compose", "compose.yaml", "    read_only: true\n    tmpfs", "    readonly: true\n    tmpfs", "check-jsonschema"),
])
def test_a_broken_file_fails_the_check(tmp_path, group, path, old, new, failing):
    broken = tmp_path / "deploy"
    shutil.copytree(DEPLOY, broken, ignore=shutil.ignore_patterns("*.secret", "atf.env"))
    target = broken / path
    text = target.read_text()
    assert text.count(old) == 1, f"'{old}' is not once in {path}"
    target.write_text(text.replace(old, new))
    res = run_check("--deploy-dir", str(broken), "--only", group)
    assert res.returncode == 1, res.stdout + res.stderr
    assert any(l.startswith("FAIL " + failing) for l in res.stdout.splitlines()), res.stdout
    assert re.search(r"^deploy config: [1-9] of \d+ checks failed$", res.stdout, re.M)
