"""A throwaway PostgreSQL 15 cluster for tests and benchmarks: `initdb` in a fresh temporary folder, `pg_ctl` on
127.0.0.1 on a free port, trust authentication, removed again by `stop`.

PostgreSQL refuses to run as root, so as root every command runs as the `postgres` user (`runuser`) and the folder
is handed to that user; otherwise the commands run as the calling user. `make test` installs PostgreSQL 15
(`scripts/ensure-system-deps.sh postgresql-15`); `PgCluster` says so in one line when `initdb` is missing.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN = Path(os.environ.get("ATF_PG_BIN", "/usr/lib/postgresql/15/bin"))
MISSING = (f"PostgreSQL 15 is not installed ({PG_BIN / 'initdb'} missing): run `scripts/ensure-system-deps.sh postgresql-15`"
           " (make test does), or set ATF_PG_BIN to the folder holding initdb and pg_ctl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    "A running throwaway cluster; `url` is its SQLAlchemy URL (database `atf`, superuser `optuna`). Call `stop` when done."
    def __init__(self):
        if not (PG_BIN / "initdb").exists(): raise RuntimeError(MISSING)
        self.root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="atf-pg-"))          # short: the socket path must stay under 108 bytes
        self.port, self.started = free_port(), False
        try:
            if self.root: shutil.chown(self.dir, "postgres", "postgres")
            self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "optuna", "--no-sync")
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o",
                      f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
            self.started = True
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "optuna", "atf")
        except BaseException:
            self.stop(); raise
        self.url = f"postgresql://optuna@127.0.0.1:{self.port}/atf"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(PG_BIN / tool), *args]
        out = subprocess.run(["runuser", "-u", "postgres", "--", *cmd] if self.root else cmd, capture_output=True, text=True, timeout=120)
        if out.returncode: raise RuntimeError(f"{tool} failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-1500:]}")

    def stop(self) -> None:
        "Stop the server (fast shutdown) and remove its folder."
        try:
            if self.started: self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
            self.started = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
