"""deploy/ is validated offline by scripts/check-deploy-config.sh (promtool config, rules and rule unit tests; kustomize
overlays against the Kubernetes schemas; compose.yaml resolved and checked against the compose schema), and stays tied
to the app: the alert rules read metrics the service really exports, the probes and the scrape hit its public paths,
the env template names what the code reads. A broken rule, manifest or compose file makes the check fail."""
import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from atf.serving.app import PUBLIC_PATHS, ServeConfig, ServeConfigError, create_app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SCRIPT = ROOT / "scripts" / "check-deploy-config.sh"
pytestmark = pytest.mark.xdist_group("deploy_config")     # one worker: the full check below runs once

OVERLAYS = sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir() if p.is_dir())
COMPONENTS = sorted(p.name for p in (DEPLOY / "k8s" / "components").iterdir() if p.is_dir())
VARIANTS = sorted([*OVERLAYS, *(f"{o}+{c}" for o in OVERLAYS for c in COMPONENTS)])   # what --render-to writes


def run_check(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict[str, list[dict]]]:
    "One full run of the check, keeping the rendered overlays: (the run, {overlay or overlay+component: its manifests})."
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
                *[f"kubectl kustomize k8s/overlays/{o}" for o in OVERLAYS],
                *[f"kubectl kustomize k8s/overlays/{o} + k8s/components/{c}" for o in OVERLAYS for c in COMPONENTS],
                "kubernetes-validate --strict", "podman-compose config (compose.yaml with",
                "check-jsonschema vendor.compose-spec compose.yaml",
                "podman-compose config (compose.yaml + compose.model-dir.yaml", "check-jsonschema vendor.compose-spec compose.model-dir.yaml"]
    for name in expected:
        assert any(l.startswith("ok   " + name) for l in lines), f"no passing check '{name}' in:\n{res.stdout}"
    assert lines[-1] == f"deploy config: {len(expected)} checks passed"
    assert sorted(docs) == VARIANTS and OVERLAYS == ["production", "staging"] and COMPONENTS == ["model-volume"]


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


TARGET_LABELS = {"job", "instance"}                      # Prometheus adds them to every scraped series


def _balanced(e: str, start: int) -> str:
    "The text inside the parentheses that open at e[start]."
    depth = 0
    for i in range(start, len(e)):
        depth += {"(": 1, ")": -1}.get(e[i], 0)
        if depth == 0: return e[start + 1:i]
    raise ValueError(f"unbalanced parentheses in {e!r}")


def label_uses(expr: str) -> list[tuple[str, set[str], set[str]]]:
    """(label, the metrics it must be a label of (any one), what uses it) for every label an expression names: in a
    selector's matchers (that metric), a `by`/`without` list (the metrics it aggregates) or `on`/`ignoring`/`group_*`
    (the metrics of the expression)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    uses = []
    for m in re.finditer(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}", e):
        for lab in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(2)):
            uses.append((lab, {m.group(1)}, f"{m.group(1)}{{{lab}...}}"))
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        labels = {l.strip() for l in m.group(2).split(",") if l.strip()}
        if m.group(1) in ("by", "without"):
            rest = e[m.end():].lstrip()
            if rest.startswith("("): inner = _balanced(rest, 0)                       # sum by (x) (inner)
            else:                                                                      # sum (inner) by (x)
                close = e[:m.start()].rstrip()
                assert close.endswith(")"), f"no aggregated expression before {m.group(0)!r}"
                depth, i = 0, len(close) - 1
                while True:
                    depth += {")": 1, "(": -1}.get(close[i], 0)
                    if depth == 0: break
                    i -= 1
                inner = close[i + 1:-1]
        else: inner = e
        for lab in labels: uses.append((lab, metric_names(inner), f"{m.group(1)} ({lab})"))
    return uses


def test_label_use_extraction():
    uses = label_uses('sum by (job, reason) (rate(a_total{path="/p", status=~"5.."}[5m])) / on (instance) group_left '
                      'sum(b) without (le)')
    assert sorted((l, tuple(sorted(ms))) for l, ms, _ in uses) == [
        ("instance", ("a_total", "b")), ("job", ("a_total",)), ("le", ("b",)), ("path", ("a_total",)),
        ("reason", ("a_total",)), ("status", ("a_total",))]


def exported_labels() -> dict[str, set[str]]:
    """Series name -> the label names the service emits on it: the real /metrics exposition of an app that has answered
    requests, parsed; for a labelled family with no series yet (per-feature drift needs a model and 100 rows), the
    labels its instrument takes, asked through prometheus_client's public remove_by_labels (it refuses unknown names)."""
    app = create_app(ServeConfig(api_key="test-key"))
    client = TestClient(app)
    body = json.loads((DEPLOY / "proxy" / "smoke-body.json").read_text())
    assert client.post("/predict", json=body, headers={"X-API-Key": "test-key"}).status_code == 503   # no model here
    client.get("/status")                                                                            # a 401
    labels: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(client.get("/metrics").text):
        for s in fam.samples: labels.setdefault(s.name, set()).update(s.labels)
        if not fam.samples:
            (inst,) = [m for m in vars(app.state.service.metrics).values()
                       if isinstance(m, MetricWrapperBase) and fam.name in (d.name for d in m.describe())]
            candidates = {"path", "status", "reason", "feature", "kind", "model", "quantile"} | set(re.findall(
                r'\b(\w+)\s*(?:=~|!~|!=|=)\s*"', (DEPLOY / "prometheus" / "alerts.yml").read_text()))
            for lab in candidates:
                try: inst.remove_by_labels({lab: "\0never"})
                except ValueError: continue
                for suffix in {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(fam.type, ("",)):
                    labels.setdefault(fam.name + suffix, set()).add(lab)
                if fam.type == "histogram": labels.setdefault(fam.name + "_bucket", set()).add("le")
    return labels


def alert_label_problems(rules: list[dict], emitted: dict[str, set[str]]) -> list[str]:
    problems = []
    for rule in rules:
        for lab, metrics, where in label_uses(rule["expr"]):
            if lab in TARGET_LABELS: continue
            if not any(lab in emitted.get(m, set()) for m in metrics):
                problems.append(f"{rule['alert']}: {where} is not a label the app emits on {sorted(metrics)}")
    return problems


@pytest.fixture(scope="module")
def emitted() -> dict[str, set[str]]:
    return exported_labels()


def test_the_label_source_sees_every_labelled_family(emitted):
    assert emitted["atf_requests_total"] == {"path", "status"}
    assert emitted["atf_request_latency_seconds_bucket"] == {"path", "le"}
    assert emitted["atf_failovers_total"] == {"reason"}
    assert emitted["atf_drift_psi"] == {"feature"}                  # no series yet: from the instrument
    assert emitted["atf_request_latency_quantile_seconds"] == {"quantile"}
    assert emitted["atf_model_ready"] == set() and "code" not in set().union(*emitted.values())


def test_alert_rules_use_only_labels_the_app_emits(emitted):
    rules = [r for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert alert_label_problems(rules, emitted) == []
    used = {lab for r in rules for lab, _, _ in label_uses(r["expr"])}
    assert {"path", "status", "reason", "feature", "le"} <= used


@pytest.mark.parametrize("old, new, needle", [
    ('status=~"5.."', 'code=~"5.."', 'atf_requests_total{code...}'),
    ("sum by (job, instance, reason)", "sum by (job, instance, cause)", "by (cause)"),
    ("sum by (job, instance, le)", "sum by (job, instance, bucket)", "by (bucket)"),
    ("max by (job, instance, feature) (atf_drift_psi)", "max by (job, instance, feature) (atf_drift_ks{path=\"x\"})",
     "atf_drift_ks{path...}"),
])
def test_a_wrong_label_in_a_rule_is_caught(emitted, old, new, needle):
    text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert text.count(old) == 1, old
    rules = [r for g in yaml.safe_load(text.replace(old, new))["groups"] for r in g["rules"]]
    problems = alert_label_problems(rules, emitted)
    assert len(problems) == 1 and needle in problems[0], problems


def test_the_latency_budget_is_a_bucket_boundary_of_the_apps_histogram():
    "histogram_quantile interpolates inside a bucket: a budget between boundaries fires on answers under it."
    client = TestClient(create_app(ServeConfig(api_key="test-key")))
    client.get("/health")
    client.get("/metrics")
    bounds = {s.labels["le"] for f in text_string_to_metric_families(client.get("/metrics").text)
              for s in f.samples if s.name == "atf_request_latency_seconds_bucket"}
    assert bounds, "no atf_request_latency_seconds_bucket series"
    rule = next(r for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"] for r in g["rules"]
                if r["alert"] == "AtfPredictLatencyP99OverBudget")
    budget = float(re.search(r"\)\s*>\s*([0-9.]+)\s*$", rule["expr"].strip()).group(1))
    assert budget in {float(b) for b in bounds}, f"budget {budget} s is not one of the app's buckets {sorted(bounds, key=float)}"
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
    used = {re.search(r'le="([^"]+)"', s["series"]).group(1) for t in tests for s in t["input_series"]
            if s["series"].startswith("atf_request_latency_seconds_bucket")}
    assert {float(b) for b in used} <= {float(b) for b in bounds}, "alerts_test.yml uses buckets the app does not have"
    assert budget in {float(b) for b in used}, "no rule test puts answers in the bucket that ends at the budget"


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
        assert "/tmp" in mounts, f"{overlay}: a read-only root needs a writable /tmp"


def test_the_model_is_the_images_unless_the_model_volume_component_is_added(checked):
    "The image's model by default (a digest names its model); the component mounts a claim read-only over /model."
    _, docs = checked
    assert "/model" in re.search(r"^ENTRYPOINT .*$", (ROOT / "Dockerfile").read_text(), re.M).group(0)
    assert re.search(r"^COPY .* /model$", (ROOT / "Dockerfile").read_text(), re.M), "the image no longer bakes a model in"
    for variant, manifests in docs.items():
        spec = one(manifests, "Deployment")["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in spec["volumes"]}
        claims = {d["metadata"]["name"] for d in manifests if d["kind"] == "PersistentVolumeClaim"}
        if "+" not in variant:
            assert "/model" not in mounts and claims == set(), f"{variant}: a volume hides the image's model"
            continue
        assert variant.endswith("+model-volume")
        assert mounts["/model"].get("readOnly") is True and "/tmp" in mounts, variant   # merged, not replaced
        claim = vols[mounts["/model"]["name"]]["persistentVolumeClaim"]
        assert claim["readOnly"] is True and claims == {claim["claimName"]}, variant
        pvc = one(manifests, "PersistentVolumeClaim")
        assert pvc["metadata"]["namespace"] == one(manifests, "Deployment")["metadata"]["namespace"]


def test_k8s_docs_say_no_workflow_applies_them():
    "deploy.yml deploys over SSH with scripts/deploy.sh: the k8s files must not claim CI applies or pins anything."
    workflows = "\n".join(p.read_text() for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert "scripts/deploy.sh" in workflows
    assert not re.search(r"\b(kubectl|kustomize|helm)\b", workflows), "a workflow applies k8s now: update deploy/k8s's docs"
    texts = {p: p.read_text() for p in (DEPLOY / "k8s").rglob("*") if p.is_file() and p.suffix in {".yaml", ".md", ""}}
    for p, text in texts.items():
        for claim in (r"deploy\.yml (sets|pins|applies|writes)", r"(?<!Nothing in )CI (writes|sets|pins|applies)", r"\(CI:"):
            assert not re.search(claim, text), f"{p.relative_to(ROOT)}: '{re.search(claim, text).group(0)}' is not true"
    readme = texts[DEPLOY / "k8s" / "README.md"]
    assert "No workflow applies them" in readme and "scripts/deploy.sh" in readme


def test_the_readmes_kubectl_only_commands_set_the_image(checked):
    "The README's sed pipelines match the rendered placeholder images exactly, so they put the digest in."
    _, docs = checked
    readme = (DEPLOY / "k8s" / "README.md").read_text()
    seds = re.findall(r'sed "s\|image: (.*?)\$\|image: \$IMAGE@\$DIGEST\|"', readme)
    assert len(seds) == 2, seds
    digest = "sha256:" + "ab" * 32
    for overlay in OVERLAYS:
        (c,) = one(docs[overlay], "Deployment")["spec"]["template"]["spec"]["containers"]
        line = f"image: {c['image']}"
        hits = [s for s in seds if re.fullmatch("image: " + s.replace(r"\{64\}", "{64}"), line)]
        assert len(hits) == 1, f"{overlay}: no README sed matches '{line}'"
        res = subprocess.run(["sed", f"s|image: {hits[0]}$|image: ghcr.io/o/atf-serve@{digest}|"], input=line + "\n",
                             capture_output=True, text=True, check=True)
        assert res.stdout == f"image: ghcr.io/o/atf-serve@{digest}\n"


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
    dep = {o: one(docs[o], "Deployment") for o in OVERLAYS}
    assert {o: d["metadata"]["namespace"] for o, d in dep.items()} == {"staging": "atf-staging", "production": "atf-production"}
    assert dep["staging"]["spec"]["replicas"] == 1 and dep["production"]["spec"]["replicas"] == 3
    image = dep["production"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"ghcr\.io/[\w.-]+/atf-serve@sha256:[0-9a-f]{64}", image), image   # production: a digest
    pdb = one(docs["production"], "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] < dep["production"]["spec"]["replicas"]      # a drain can still go on
    assert pdb["spec"]["selector"]["matchLabels"] == dep["production"]["spec"]["selector"]["matchLabels"]
    for variant, manifests in docs.items():
        o = variant.split("+")[0]
        assert all(x["metadata"]["namespace"] == f"atf-{o}" for x in manifests if x["kind"] != "Namespace"), variant


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
    compose = set(re.findall(r"\$\{(\w+)", "".join(p.read_text() for p in DEPLOY.glob("compose*.yaml"))))
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


def test_the_model_dir_is_documented_as_absolute_and_the_check_uses_the_templates_example():
    "compose resolves a relative bind source against the compose file's folder (deploy/), not the caller's directory."
    text = (DEPLOY / "atf.env.example").read_text()
    block = text[:text.index("#ATF_MODEL_DIR=")].rsplit("\n\n", 1)[1]
    assert "ABSOLUTE path" in block and "against deploy/" in block, block
    assert template()["ATF_MODEL_DIR"].startswith("/"), "the template's example ATF_MODEL_DIR is not absolute"
    assert "ATF_MODEL_DIR" not in yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["atf-serve"].get("volumes", "")
    assert "absolute path" in (DEPLOY / "compose.model-dir.yaml").read_text()


def test_compose_wires_the_service_prometheus_and_rules_together():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    serve, prom = compose["services"]["atf-serve"], compose["services"]["prometheus"]
    assert serve["env_file"] == ["atf.env"] and serve["read_only"] is True and serve["user"] == "10001"
    assert "volumes" not in serve, "compose.yaml mounts something over the image (its model at /model?)"
    (model,) = yaml.safe_load((DEPLOY / "compose.model-dir.yaml").read_text())["services"]["atf-serve"]["volumes"]
    assert model["target"] == "/model" and model["read_only"] is True and model["source"].startswith("${ATF_MODEL_DIR:?")
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
    ("compose", "atf.env.example", "\nATF_IMAGE=\n", "\n", "podman-compose config (compose.yaml with"),   # required var unset
    ("compose", "compose.model-dir.yaml", "ATF_MODEL_DIR:?set", "MODEL_DIR:?set",
     "podman-compose config (compose.yaml + compose.model-dir.yaml"),                 # a variable the template lacks
    ("compose", "compose.model-dir.yaml", "read_only: true", "readonly: true", "check-jsonschema vendor.compose-spec compose.model-dir"),
    ("k8s", "k8s/components/model-volume/deployment-patch.yaml", "readOnly: true\n      volumes", "readonly: true\n      volumes",
     "kubernetes-validate"),                                                   # the component is validated too
    ("prometheus", "prometheus/alerts.yml", ") > 0.25", ") > 0.2", "promtool test rules"),   # ~210 ms answers fire
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
