"""The GitHub Actions workflows lint clean offline (actionlint + the GitHub workflow JSON schema), and the lint fails on
what GitHub would reject or has removed: a node20 action, a bad expression, a missing `runs-on`."""
import subprocess
from pathlib import Path

import pytest
import yaml

LINT = ["bash", "scripts/lint-workflows.sh"]


def test_every_workflow_lints_clean():
    res = subprocess.run(LINT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(list(Path('.github/workflows').glob('*.yml')))} workflow(s) clean" in res.stdout


@pytest.mark.parametrize("step, says", [
    ({"uses": "actions/checkout@v4"}, 'runtime "node20" is deprecated'),
    ({"run": "echo ${{ github.evnt_name }}"}, "property \"evnt_name\" is not defined"),
])
def test_the_lint_fails_on_what_github_rejects(tmp_path, step, says):
    wf = {"name": "bad", "on": ["push"], "permissions": {"contents": "read"},
          "jobs": {"a": {"runs-on": "ubuntu-24.04", "steps": [step]}}}
    path = tmp_path / "bad.yml"; path.write_text(yaml.safe_dump(wf, sort_keys=False))
    res = subprocess.run([*LINT, str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and says in res.stdout + res.stderr, res.stdout + res.stderr


def test_the_schema_catches_a_job_without_a_runner(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"name": "bad", "on": ["push"], "jobs": {"a": {"steps": [{"run": "true"}]}}}))
    res = subprocess.run([*LINT, str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "runs-on" in res.stdout + res.stderr


def test_docs_publish_only_from_main_with_pages_permissions():
    wf = yaml.safe_load(Path(".github/workflows/docs.yml").read_text())
    deploy = wf["jobs"]["deploy"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"} and deploy["environment"]["name"] == "github-pages"
    assert "pull_request" in deploy["if"] and "refs/heads/main" in deploy["if"]
    assert wf["permissions"] == {"contents": "read"}                      # nothing else may write
