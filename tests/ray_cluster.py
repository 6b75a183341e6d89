"""A real Ray cluster on this machine for tests: a head node and worker nodes, each its own `ray start --block` process.

Every port is chosen free so that a cluster of a test never meets another Ray on the machine. Token authentication is
off (`RAY_AUTH_MODE=disabled`): the nodes listen on 127.0.0.1 only. Killing a node's `ray start --block` process
takes the node down, which is how the tests lose a node mid-run.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONWARNINGS": "ignore"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ports() -> list[str]:
    "Free ports for every service a node opens (defaults would clash with another Ray on the machine)."
    args = []
    for flag in ("--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
                 "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port"):
        args += [flag, str(free_port())]
    return args


def _priority() -> None:
    "Run a node ahead of the test load (root only): its agents must start within Ray's fixed 15 s (see Cluster._start)."
    try: os.nice(-10)
    except PermissionError: pass


class Node:
    "One Ray node: the `ray start --block` process and its log."
    def __init__(self, args: list[str], log: Path):
        self.log = log
        self.proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
                                      *_ports(), *args], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=ENV,
                                     start_new_session=True, preexec_fn=_priority)

    def running(self, title: str) -> int:
        "How many processes titled `title` (Ray names a busy worker 'ray::<function>') this node's raylet has started."
        rows = [line.split(None, 3) for line in subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,args="], capture_output=True,
                                                               text=True).stdout.splitlines()]
        mine = {r[0] for r in rows if r[2] == str(self.proc.pid)}        # the node's own processes (raylet, agents)
        return sum(1 for r in rows if len(r) == 4 and r[1] in mine and r[3].startswith(title))

    def kill(self) -> None:
        """Take the node down as a dead machine would: the `ray start --block` process and every process it started,
        Ray workers included (they run in process groups of their own, so killing the group is not enough)."""
        if self.proc.poll() is not None: return
        rows = [line.split()[:2] for line in subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True,
                                                            text=True).stdout.splitlines()]
        tree, grew = {str(self.proc.pid)}, True
        while grew:
            more = {pid for pid, ppid in rows if ppid in tree} - tree
            tree |= more; grew = bool(more)
        for pid in tree:
            try: os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError: pass
        self.proc.wait(30)


class Cluster:
    "A head node (`head_cpus`) plus worker nodes added with `add_node`; `address` is what `ray.init` and atf take."
    def __init__(self, folder: Path, head_cpus: int = 1):
        self.folder, self.port, self.nodes = folder, free_port(), []
        self.address = f"127.0.0.1:{self.port}"
        self._start(["--head", "--port", str(self.port), "--num-cpus", str(head_cpus), "--include-dashboard=false"], "head")

    def add_node(self, cpus: int = 1) -> Node:
        return self._start(["--address", self.address, "--num-cpus", str(cpus)], f"node{len(self.nodes)}")

    def _start(self, args: list[str], name: str, tries: int = 4) -> Node:
        """Start a node and wait until the cluster counts it. Ray 2.60's raylet gives its dashboard agent a fixed 15 s
        to start (ray-project/ray#65983); on a loaded 2-core machine that can run out, the node then exits and is
        started again (up to `tries` times)."""
        for attempt in range(tries):
            node = Node(args, self.folder / f"{name}.{attempt}.log")
            if self._wait_for(len(self.nodes) + 1, node): break
            node.kill()                                    # what is left of the failed attempt
        else: raise RuntimeError(f"ray node {name} did not start in {tries} tries: {node.log.read_text()[-2000:]}")
        self.nodes.append(node)
        return node

    def alive_nodes(self) -> int:
        out = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={self.address!r}, log_to_driver=False); "
                              "print('ALIVE', sum(n['Alive'] for n in ray.nodes()))"], capture_output=True, text=True, env=ENV, timeout=120)
        alive = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("ALIVE ")]
        return int(alive[-1]) if alive else 0

    def _wait_for(self, n: int, node: Node, timeout: float = 180) -> bool:
        "True once `n` nodes are alive; False when `node` exited first."
        t0 = time.time()
        while time.time() - t0 < timeout:
            if node.proc.poll() is not None: return False
            if self.alive_nodes() >= n: return True
            time.sleep(1)
        raise TimeoutError(f"ray cluster at {self.address}: {n} nodes not alive after {timeout}s")

    def stop(self) -> None:
        for node in reversed(self.nodes): node.kill()
