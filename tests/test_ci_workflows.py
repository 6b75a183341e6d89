"""The GitHub Actions workflows lint clean offline (actionlint with shellcheck on every `run:` block + the GitHub
workflow JSON schema), the shell scripts are shellcheck-clean, and the lint fails on what GitHub would reject or has
removed: a node20 action, a bad expression, a missing `runs-on`, a shell bug in a script or a `run:` block.

Then what the workflows promise, read from their YAML: docker.yml bakes in the released model fetched and verified by
scripts/fetch-model.sh, smoke-tests and scans before it pushes, pushes only from non-PR events with `packages: write`
in that job alone; deploy.yml promotes to production the digest staging verified; no secret or event text is
expanded inside a `run:` script; every job has a timeout. And scripts/fetch-model.sh against a real exported model:
a good tarball passes, a wrong expected sha256, a tampered, extra or escaping file fails."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

LINT = ["bash", "scripts/lint-workflows.sh"]
WF = Path(".github/workflows")
WORKFLOWS = sorted(WF.glob("*.yml"))


def TRACKED(path: str) -> bool:
    "Whether git tracks `path` (True outside a git checkout, where there is nothing to ask)."
    if not Path(".git").exists(): return True
    return subprocess.run(["git", "ls-files", "--error-unmatch", path], capture_output=True).returncode == 0


def load(name: str) -> dict:
    wf = yaml.safe_load((WF / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))          # YAML 1.1 reads the key `on` as True
    return wf


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def step_using(job: dict, action: str) -> list[dict]:
    return [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]


def lint(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT, *map(str, paths)], capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------------------------ the lint itself
def test_every_workflow_and_script_lints_clean():
    res = lint()
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"{len(WORKFLOWS)} workflow(s) clean" in out
    assert f"{len(list(Path('scripts').glob('*.sh'))) + 1} script(s) clean" in out         # + .ci/run


def bad_workflow(tmp_path, step) -> Path:
    wf = {"name": "bad", "on": ["push"], "permissions": {"contents": "read"},
          "jobs": {"a": {"runs-on": "ubuntu-24.04", "timeout-minutes": 5, "steps": [step]}}}
    path = tmp_path / "bad.yml"; path.write_text(yaml.safe_dump(wf, sort_keys=False))
    return path


@pytest.mark.parametrize("step, says", [
    ({"uses": "actions/checkout@v4"}, 'runtime "node20" is deprecated'),
    ({"uses": "docker/build-push-action@v6", "with": {"push": False}}, 'runtime "node20" is deprecated'),
    ({"run": "echo ${{ github.evnt_name }}"}, "property \"evnt_name\" is not defined"),
    ({"run": "f=$(ls /tmp)\nrm $f"}, "SC2086"),                           # shellcheck inside actionlint
])
def test_the_lint_fails_on_what_github_rejects(tmp_path, step, says):
    res = lint(bad_workflow(tmp_path, step))
    assert res.returncode != 0 and says in res.stdout + res.stderr, res.stdout + res.stderr


def test_the_schema_catches_a_job_without_a_runner(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"name": "bad", "on": ["push"], "jobs": {"a": {"steps": [{"run": "true"}]}}}))
    res = lint(path)
    assert res.returncode != 0 and "runs-on" in res.stdout + res.stderr


def test_the_lint_fails_on_a_broken_script(tmp_path):
    good = tmp_path / "good.sh"; good.write_text('#!/usr/bin/env bash\nset -euo pipefail\nf=${1:-x}\nrm -- "$f"\n')
    bad = tmp_path / "bad.sh"; bad.write_text('#!/usr/bin/env bash\nset -euo pipefail\nf=${1:-x}\nrm -- $f\n')
    assert lint(good).returncode == 0
    res = lint(bad)
    assert res.returncode != 0 and "SC2086" in res.stdout + res.stderr


@pytest.mark.parametrize("name, old, new, says", [
    ("docker.yml", "docker/build-push-action@v7", "docker/build-push-action@v5", 'runtime "node20"'),
    ("docker.yml", "steps.push.outputs.digest", "steps.pushed.outputs.digest", 'property "pushed" is not defined'),
    ("deploy.yml", "needs.staging.outputs.digest", "needs.stagin.outputs.digest", '"stagin"'),
    ("deploy.yml", 'ssh target tar -x -C "$src"', "ssh target tar -x -C $src", "SC2086"),
    ("nightly.yml", "actions/upload-artifact@v7", "actions/upload-artifact@v4", 'runtime "node20"'),
    ("nightly.yml", 'cron: "17 2 * * *"', 'cron: "17 25 * * *"', "cron"),
])
def test_the_lint_fails_on_a_broken_copy_of_each_workflow(tmp_path, name, old, new, says):
    text = (WF / name).read_text()
    assert old in text, f"{name} no longer holds {old!r}: update this test"
    path = tmp_path / name; path.write_text(text.replace(old, new))
    res = lint(path)
    assert res.returncode != 0 and says in res.stdout + res.stderr, res.stdout + res.stderr


# ----------------------------------------------------------------------------------- what every workflow promises
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_has_permissions_timeouts_and_pinned_actions(path):
    wf = load(path.name)
    assert "permissions" in wf, f"{path.name}: no top-level permissions (the token would get the repository default)"
    for name, job in wf["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"{path.name}: job {name} has no timeout-minutes"
        for s in steps(job):
            if "uses" in s:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+|[0-9a-f]{40})", s["uses"]), f"{path.name}: {s['uses']} is not a major or a commit"


def run_blocks(wf: dict):
    for name, job in wf["jobs"].items():
        for s in steps(job):
            if "run" in s:
                yield name, s


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_is_expanded_inside_a_run_script(path):
    "Secrets and event text reach scripts through env: `${{ }}` in `run:` is pasted into the script (leaks, injection)."
    for job, s in run_blocks(load(path.name)):
        assert "${{" not in s["run"], f"{path.name}: job {job}, step {s.get('name', s['run'][:40])!r} expands an expression in run:"
    text = path.read_text()
    assert not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY|ghp_[A-Za-z0-9]{20}|ATF_API_KEY: [^$\s]", text)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_script_a_workflow_runs_exists_and_is_executable(path):
    for job, s in run_blocks(load(path.name)):
        for script in re.findall(r"(?<![\w/])scripts/[\w.-]+\.(?:sh|py)", s["run"]):
            assert Path(script).is_file(), f"{path.name}: {script} does not exist"
            assert TRACKED(script), f"{path.name}: {script} is not committed (git ls-files): a clean clone lacks it"
            if script.endswith(".sh"):
                assert os.access(script, os.X_OK), f"{path.name}: {script} is not executable"


# --------------------------------------------------------------------------------------------------- docker.yml
def test_docker_pushes_only_from_non_pr_events_and_only_its_push_job_may_write_packages():
    wf = load("docker.yml")
    assert not {"pull_request", "pull_request_target"} & set(wf["on"]) and wf["on"]["push"]["tags"] == ["v*"]
    assert wf["on"]["push"]["branches"] == ["main"] and "workflow_dispatch" in wf["on"]
    assert wf["permissions"] == {"contents": "read"}
    pushers = {n for n, j in wf["jobs"].items() if any(s.get("with", {}).get("push") is True for s in step_using(j, "docker/build-push-action"))}
    writers = {n for n, j in wf["jobs"].items() if j.get("permissions", {}).get("packages") == "write"}
    assert pushers and writers == pushers
    job = wf["jobs"][pushers.pop()]
    for s in steps(job):
        if s.get("uses", "").startswith(("docker/login-action", "actions/attest")) or s.get("with", {}).get("push") is True:
            assert s.get("if") == "github.event_name != 'pull_request'", s


def test_docker_builds_the_released_model_smoke_tests_and_scans_before_pushing():
    job = load("docker.yml")["jobs"]["image"]
    names = [s.get("uses", "") + " " + s.get("name", "") + " " + s.get("run", "") for s in steps(job)]
    at = lambda pat: next(i for i, t in enumerate(names) if re.search(pat, t))
    fetch, build, smoke = at(r"scripts/fetch-model\.sh --release"), at(r"build-push-action"), at(r"scripts/deploy-smoke\.sh")
    scan, push = at(r"aquasecurity/trivy-action@[0-9a-f]{40}"), at(r"^\S*login-action")
    assert fetch < build < smoke < push and build < scan < push
    # the model goes where the Dockerfile copies it from, and the image is built from this context (not git's)
    dockerfile_default = re.search(r"^ARG MODEL_DIR=(\S+)", Path("Dockerfile").read_text(), re.M).group(1)
    assert f"--dest {dockerfile_default} " in steps(job)[fetch]["run"] + " "
    builds = step_using(job, "docker/build-push-action")
    assert len(builds) == 2 and all(b["with"]["context"] == "." for b in builds)
    assert builds[0]["with"]["load"] is True and builds[0]["with"]["push"] is False
    assert builds[1]["with"]["provenance"] == "mode=max" and builds[1]["with"]["sbom"] is True
    trivy = step_using(job, "aquasecurity/trivy-action")[0]["with"]
    assert trivy["exit-code"] == "1" and set(trivy["severity"].split(",")) == {"HIGH", "CRITICAL"} and trivy["ignore-unfixed"] is True
    meta = step_using(job, "docker/metadata-action")[0]["with"]
    assert {"type=sha,format=long", "type=ref,event=branch", "type=semver,pattern={{version}}"} <= set(meta["tags"].split())
    assert "io.atf.model.manifest-sha256=${{ vars.MODEL_MANIFEST_SHA256 }}" in meta["labels"]
    assert job["outputs"]["digest"] == "${{ steps.push.outputs.digest }}"
    assert step_using(job, "actions/upload-artifact")[0]["with"]["name"] == "image"


# --------------------------------------------------------------------------------------------------- deploy.yml
def test_deploy_stages_every_docker_run_and_promotes_the_same_digest_to_production():
    wf, docker = load("deploy.yml"), load("docker.yml")
    assert wf["on"]["workflow_run"] == {"workflows": [docker["name"]], "types": ["completed"]}
    staging, prod = wf["jobs"]["staging"], wf["jobs"]["production"]
    assert "github.event.workflow_run.conclusion == 'success'" in staging["if"]
    assert staging["environment"]["name"] == "staging" and prod["environment"]["name"] == "production"
    assert prod["needs"] == "staging" and prod["if"] == "needs.staging.outputs.promote == 'true'"
    # the artifact the Docker run uploaded, from that run
    dl = step_using(staging, "actions/download-artifact")[0]["with"]
    assert dl["name"] == step_using(docker["jobs"]["image"], "actions/upload-artifact")[0]["with"]["name"]
    assert dl["run-id"] == "${{ github.event.workflow_run.id }}"
    assert staging["outputs"]["digest"] == "${{ steps.image.outputs.digest }}"
    stage_deploy = next(s for s in steps(staging) if s.get("id") == "deploy")
    prod_deploy = next(s for s in steps(prod) if s.get("id") == "deploy")
    assert stage_deploy["env"]["IMAGE"] == "${{ steps.image.outputs.image }}@${{ steps.image.outputs.digest }}"
    assert prod_deploy["env"]["IMAGE"] == "${{ needs.staging.outputs.image }}@${{ needs.staging.outputs.digest }}"
    for env, job in (("staging", staging), ("production", prod)):
        assert job["concurrency"] == {"group": f"deploy-{env}", "cancel-in-progress": False}
        runs = [s.get("run", "") for s in steps(job)]
        deploy_i = next(i for i, r in enumerate(runs) if f"scripts/deploy.sh {env} " in r)
        smoke_i = next(i for i, r in enumerate(runs) if "scripts/deploy-smoke.sh" in r)
        back = [s for s in steps(job) if f"scripts/deploy.sh --rollback {env} " in s.get("run", "")]
        assert deploy_i < smoke_i and len(back) == 1
        assert back[0]["if"] == "failure() && steps.deploy.outcome == 'success'" and "exit 1" in back[0]["run"]
        secrets = {v for s in steps(job) for v in s.get("env", {}).values() if "secrets." in str(v)}
        assert {"${{ secrets.ATF_API_KEY }}", "${{ secrets.DEPLOY_SSH_KEY }}", "${{ secrets.DEPLOY_HOST }}",
                "${{ secrets.DEPLOY_USER }}"} <= secrets
        assert job["permissions"].get("contents") == "read" and "packages" not in job["permissions"]


def test_the_deploy_step_keeps_the_key_off_every_command_line(tmp_path):
    "Run the staging deploy step's script with a recording ssh: the key reaches the host only in the script on stdin."
    step = next(s for s in steps(load("deploy.yml")["jobs"]["staging"]) if s.get("id") == "deploy")
    fake = tmp_path / "bin"; fake.mkdir()
    (fake / "ssh").write_text('#!/usr/bin/env bash\nn=$(cat "$LOG.n" 2>/dev/null || echo 0); echo $((n + 1)) > "$LOG.n"\n'
                              'printf "%s\\n" "$*" > "$LOG.$n.args"; cat > "$LOG.$n.stdin"\n')
    (fake / "ssh").chmod(0o755)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    key = "k3y with 'quotes', spaces and $dollar"
    image = "ghcr.io/o/atf-serve@sha256:" + "a" * 64
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "LOG": str(tmp_path / "ssh"), "ATF_API_KEY": key,
           "IMAGE": image, "SHA": sha, "DEPLOY_ROOT": "", "DEPLOY_PORT": "8080", "DEPLOY_MODEL_DIR": "", "LATENCY_BUDGET_MS": "250"}
    res = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    calls = int((tmp_path / "ssh.n").read_text())
    args = [(tmp_path / f"ssh.{i}.args").read_text().split() for i in range(calls)]
    assert args[0] == ["target", "mkdir", "-p", f"atf-deploy/src/{sha}"] and args[1][:3] == ["target", "tar", "-x"]
    assert args[-1] == ["target", "bash", "-s"] and not any("k3y" in " ".join(a) for a in args)
    with tarfile.open(tmp_path / "ssh.1.stdin") as t:                    # what the host unpacks: the commit's scripts/
        assert "scripts/lint-workflows.sh" in t.getnames()
    # play the host: the script on stdin runs scripts/deploy.sh from the commit's folder with the key in its environment
    host = tmp_path / "home"; bin_ = host / f"atf-deploy/src/{sha}/scripts"; bin_.mkdir(parents=True)
    (bin_ / "deploy.sh").write_text('#!/usr/bin/env bash\nprintf "%s|%s|%s|%s" "$ATF_API_KEY" "$PORT" "${DEPLOY_ROOT-unset}" "$*"\n')
    (bin_ / "deploy.sh").chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if k not in ("ATF_API_KEY", "PORT", "DEPLOY_ROOT")}
    out = subprocess.run(["bash", "-s"], stdin=open(tmp_path / f"ssh.{calls - 1}.stdin"), cwd=host, env=clean,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout == f"{key}|8080|unset|staging {image}", (out.stdout, out.stderr)


# --------------------------------------------------------------------------------------------------- nightly.yml
def notebook_parameters() -> set[str]:
    names = set()
    for nb in Path("nbs/workflows").glob("*.ipynb"):
        for c in json.loads(nb.read_text())["cells"]:
            if "parameters" in c.get("metadata", {}).get("tags", []):
                names |= set(re.findall(r"^(\w+)\s*=", "".join(c["source"]), re.M))
    return names


def test_nightly_runs_every_workflow_notebook_at_a_larger_size_and_uploads_what_it_made():
    wf = load("nightly.yml")
    assert wf["on"]["schedule"][0]["cron"] and "workflow_dispatch" in wf["on"]
    job = wf["jobs"]["workflows"]
    run = next(s["run"] for _, s in run_blocks(wf) if "scripts/run-workflows.sh" in s["run"])
    passed = re.findall(r"-[pr] (\w+) ", run)
    assert passed and set(passed) <= notebook_parameters(), set(passed) - notebook_parameters()
    assert {"n_trials", "max_epochs", "total_timesteps", "memory_bank"} <= set(passed)
    defaults = {k: int(re.search(rf"inputs\.{k} \|\| '(\d+)'", job["env"][k.upper()]).group(1))
                for k in ("n_trials", "max_epochs", "total_timesteps")}
    ci = {}
    for nb in Path("nbs/workflows").glob("*.ipynb"):            # the notebooks' own (CI) sizes
        for c in json.loads(nb.read_text())["cells"]:
            if "parameters" in c.get("metadata", {}).get("tags", []):
                for k, v in re.findall(r"^(n_trials|max_epochs|total_timesteps) = (\d+)", "".join(c["source"]), re.M):
                    ci[k] = max(ci.get(k, 0), int(v))
    assert all(defaults[k] > ci[k] for k in defaults), (defaults, ci)
    uploads = [s["with"]["path"] for s in step_using(job, "actions/upload-artifact")]
    assert any("reports/*-nightly-${{ github.run_id }}/" in p for p in uploads)
    page = re.search(r"--out OUT.*?(nbs/\S+\.qmd)", subprocess.run([sys.executable, "scripts/results_page.py", "--help"],
                                                          capture_output=True, text=True).stdout.replace("\n", " "))
    assert page and any(page.group(1) in p for p in uploads), page
    assert any(s.get("run", "").startswith(".venv/bin/python scripts/results_page.py") for s in steps(job))


# --------------------------------------------------------------------------------------------------- docs.yml
def test_docs_publish_only_from_main_with_pages_permissions():
    wf = load("docs.yml")
    deploy = wf["jobs"]["deploy"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"} and deploy["environment"]["name"] == "github-pages"
    assert "pull_request" in deploy["if"] and "refs/heads/main" in deploy["if"]
    assert wf["permissions"] == {"contents": "read"}                      # nothing else may write


# ------------------------------------------------------------------------------------------ scripts/fetch-model.sh
FETCH = ["bash", "scripts/fetch-model.sh"]


@pytest.fixture(scope="module")
def model() -> Path:
    "A real exported model (a run of configs/serve_smoke.yaml), the one the container and deploy tests serve: read only."
    res = subprocess.run(["bash", "scripts/smoke-model.sh"], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "BIN": str(Path(sys.executable).parent)})
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip())


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def fetch(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*FETCH, *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def tarball(src: Path, out: Path, mutate=None) -> Path:
    "A copy of the model directory, changed by `mutate`, as a tar.gz with one top-level folder."
    work = out.with_suffix(".d"); shutil.copytree(src, work / src.name)
    if mutate: mutate(work / src.name)
    with tarfile.open(out, "w:gz") as t: t.add(work / src.name, arcname=src.name)
    return out


def test_fetch_model_help():
    res = subprocess.run([*FETCH, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "MODEL_MANIFEST_SHA256" in res.stdout and "--release TAG --asset PATTERN" in res.stdout


def test_fetch_model_packs_and_unpacks_a_good_model(model, tmp_path):
    packed = fetch("--pack", model, tmp_path / "m.tar.gz")
    want = sha256(model / "manifest.json")
    assert packed.returncode == 0 and f"manifest sha256 {want}" in packed.stdout, packed.stderr
    res = fetch("--tarball", tmp_path / "m.tar.gz", "--dest", tmp_path / "out", env={"MODEL_MANIFEST_SHA256": want.upper()})
    assert res.returncode == 0 and "every file verified" in res.stdout, res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in model.iterdir())
    assert all(sha256(tmp_path / "out" / p.name) == sha256(p) for p in model.iterdir())
    again = fetch("--tarball", tmp_path / "m.tar.gz", "--sha256", want, "--dest", tmp_path / "out")
    assert again.returncode != 0 and "exists and is not empty" in again.stderr
    assert fetch("--tarball", tmp_path / "m.tar.gz", "--sha256", want, "--dest", tmp_path / "out", "--force").returncode == 0


def test_fetch_model_refuses_a_wrong_expected_sha256(model, tmp_path):
    t = tarball(model, tmp_path / "m.tar.gz")
    wrong = hashlib.sha256(b"another model").hexdigest()
    res = fetch("--tarball", t, "--sha256", wrong, "--dest", tmp_path / "out")
    assert res.returncode == 1 and "not the released model" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    for args, says in (([], "no expected manifest sha256"), (["--sha256", ""], "--sha256 needs a value"),
                       (["--sha256", "abc"], "not 64 hex digits")):
        res = fetch("--tarball", t, *args, "--dest", tmp_path / "out", env={"MODEL_MANIFEST_SHA256": ""})
        assert res.returncode == 1 and says in res.stderr, res.stderr


def _append(name):
    def mutate(d: Path):
        with open(d / name, "ab") as f: f.write(b"\0")
    return mutate


@pytest.mark.parametrize("mutate, says", [
    (_append("pipeline.pkl"), "pipeline.pkl: sha256 differs from the manifest"),
    (_append("model.onnx"), "model.onnx: sha256 differs from the manifest"),
    (lambda d: (d / "model.ts").unlink(), "model.ts listed in the manifest is missing"),
    (lambda d: (d / "extra.py").write_text("import os"), "not listed in the manifest: extra.py"),
], ids=["tampered-pickle", "tampered-onnx", "missing-file", "extra-file"])
def test_fetch_model_refuses_a_model_that_does_not_match_its_manifest(model, tmp_path, mutate, says):
    t = tarball(model, tmp_path / "m.tar.gz", mutate)
    res = fetch("--tarball", t, "--sha256", sha256(model / "manifest.json"), "--dest", tmp_path / "out")
    assert res.returncode == 1 and says in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "out").exists()


def test_fetch_model_refuses_a_tampered_manifest_even_when_it_matches_the_files(model, tmp_path):
    def rewrite(d: Path):
        m = json.loads((d / "manifest.json").read_text()); m["run_id"] = "someone-else"
        (d / "manifest.json").write_text(json.dumps(m))
    res = fetch("--tarball", tarball(model, tmp_path / "m.tar.gz", rewrite), "--sha256", sha256(model / "manifest.json"),
                "--dest", tmp_path / "out")
    assert res.returncode == 1 and "manifest.json sha256 is" in res.stderr


@pytest.mark.parametrize("member, says", [("../escape.txt", "outside the folder"), ("/etc/evil", "outside the folder"),
                                          ("link", "only files and folders")])
def test_fetch_model_refuses_archive_members_that_escape(model, tmp_path, member, says):
    t = tmp_path / "evil.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        for p in model.iterdir(): tf.add(p, arcname=p.name)
        info = tarfile.TarInfo(member)
        if member == "link": info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        else: info.size = 1
        tf.addfile(info, None if member == "link" else __import__("io").BytesIO(b"x"))
    scratch = tmp_path / "t"; scratch.mkdir()           # the script unpacks under $TMPDIR: "../x" would land here
    res = fetch("--tarball", t, "--sha256", sha256(model / "manifest.json"), "--dest", tmp_path / "out",
                env={"TMPDIR": str(scratch)})
    assert res.returncode == 1 and says in res.stderr, res.stderr
    assert not list(scratch.iterdir()) and not (tmp_path / "out").exists(), (list(scratch.iterdir()), res.stderr)


def test_fetch_model_downloads_a_release_with_gh(model, tmp_path):
    "`--release` runs `gh release download TAG --pattern ASSET --dir D --repo R` (gh replaced by a recorder here)."
    t = tarball(model, tmp_path / "IBM_native.tar.gz")
    fake = tmp_path / "bin"; fake.mkdir()
    (fake / "gh").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$GH_ARGS"\n'
                             'while [ $# -gt 0 ]; do [ "$1" = --dir ] && { mkdir -p "$2"; cp "$GH_ASSET" "$2"/; }; shift; done\n')
    (fake / "gh").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "GH_ARGS": str(tmp_path / "args"), "GH_ASSET": str(t)}
    res = fetch("--release", "model-2026-11-28", "--asset", "IBM_*.tar.gz", "--repo", "o/atf",
                "--sha256", sha256(model / "manifest.json"), "--dest", tmp_path / "out", env=env)
    assert res.returncode == 0, res.stderr
    args = (tmp_path / "args").read_text().split("\n")
    assert args[:5] == ["release", "download", "model-2026-11-28", "--pattern", "IBM_*.tar.gz"] and "--repo" in args
    assert (tmp_path / "out" / "model.onnx").is_file()
