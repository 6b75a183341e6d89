"""scripts/ci-as-user.sh refuses what it must before it touches the machine (no user, no package, no sudoers entry).

The full run (a throwaway non-root user with sudo: `make install` and the rootless container smoke test, ~8 min)
is `make test-nonroot`; these checks only cover its argument and safety guards, which run in well under a second."""
import os, pwd, shutil, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ci-as-user.sh"


def run(*args, user=None):
    cmd = ["bash", str(SCRIPT), *args]
    if user: cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_help_describes_the_run():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    for word in ("non-root", "passwordless sudo", "make install", "make test-container", "--apt-probe", "--keep"):
        assert word in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown argument --bogus"),
    (["--base", "pull"], "--base must be copy or build"),
    (["--user", "Bad Name"], "bad user name"),
    (["--port", "80x"], "bad port"),
    (["--apt-probe", "hello;id"], "bad package name"),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    r = run(*args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the guards below are the ones a root run meets")
def test_refuses_an_existing_user_and_a_probe_it_needs():
    sudoers = sorted(Path("/etc/sudoers.d").glob("atf-ci-*")) if Path("/etc/sudoers.d").exists() else []
    r = run("--user", "root")
    assert r.returncode == 1 and "user root exists already" in r.stderr, r.stderr
    r = run("--user", "atfcitest", "--apt-probe", "sudo")
    assert r.returncode == 2 and "a package this run needs" in r.stderr, r.stderr
    with pytest.raises(KeyError): pwd.getpwnam("atfcitest")   # nothing was created
    assert (sorted(Path("/etc/sudoers.d").glob("atf-ci-*")) if Path("/etc/sudoers.d").exists() else []) == sudoers


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root to switch to nobody")
def test_refuses_to_run_as_non_root():
    r = run("--user", "atfcitest", user="nobody")
    assert r.returncode == 1 and "run as root" in r.stderr, r.stderr
