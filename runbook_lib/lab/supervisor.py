"""The lab backend's process manager: one listening socket, ``replicas`` uvicorn processes behind it.

It binds the API port once and hands the socket to every replica (the kernel spreads connections over
the processes accepting on it, like a Kubernetes Service over pods). Every ``POLL_INTERVAL_S`` it
re-reads the config file and starts or stops replicas to match ``replicas``, restarting any that died.
Each replica serves its own metrics on a private port; the supervisor lists them in
``backend/targets.json`` (Prometheus ``file_sd``) and in ``backend/backend.json`` (PIDs, for
``runbook lab down``). It also serves a node-exporter subset (``node_cpu_seconds_total``,
``node_memory_*``) for the machine's CPU and memory.

Run by ``runbook lab up``: ``python -m runbook_lib.lab.supervisor --state DIR --port P ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from runbook_lib.lab.config import CONFIG_FILE, POLL_INTERVAL_S, ConfigWatcher
from runbook_lib.lab.servers import free_port, kill_pid
from runbook_lib.run_folder import write_atomic

BACKEND_DIR = "backend"
BACKEND_FILE = "backend.json"
TARGETS_FILE = "targets.json"
LISTEN_BACKLOG = 2048
REPLICA_STOP_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


class NodeCollector:
    """The few node_exporter series the runbook reads: CPU seconds by mode, total and available memory."""

    def collect(self):
        cpu = CounterMetricFamily("node_cpu_seconds_total", "seconds the CPUs spent in each mode",
                                  labels=["cpu", "mode"])
        for line in Path("/proc/stat").read_text().splitlines():
            name, *vals = line.split()
            if name.startswith("cpu") and name != "cpu":
                for mode, v in zip(CPU_MODES, vals):
                    cpu.add_metric([name[3:], mode], int(v) / CLK_TCK)
        yield cpu
        mem = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            mem[key] = int(rest.split()[0]) * 1024
        for key in ("MemTotal", "MemAvailable"):
            yield GaugeMetricFamily(f"node_memory_{key}_bytes", f"{key} from /proc/meminfo", value=mem[key])


def _write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2))


class Supervisor:
    def __init__(self, args):
        self.state = Path(args.state).resolve()
        self.folder = self.state / BACKEND_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.watcher = ConfigWatcher(self.state / CONFIG_FILE)
        self.replicas: dict[int, tuple[subprocess.Popen, int]] = {}
        self.restarts = 0
        self.stopping = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", args.port))
        self.sock.listen(LISTEN_BACKLOG)
        self.sock.set_inheritable(True)
        self.node_port = args.node_metrics_port or free_port()
        registry = CollectorRegistry()
        registry.register(NodeCollector())
        start_http_server(self.node_port, addr="127.0.0.1", registry=registry)
        self._published = None

    def _spawn(self, index: int) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "runbook_lib.lab.backend", "--fd", str(self.sock.fileno()),
                "--metrics-port", str(port), "--index", str(index), "--dsn", self.args.dsn,
                "--redis-url", self.args.redis_url, "--config", str(self.state / CONFIG_FILE),
                "--state", str(self.state)]
        with open(self.folder / "backend.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                    pass_fds=(self.sock.fileno(),))
        self.replicas[index] = (proc, port)

    def _stop_replica(self, index: int) -> None:
        proc, _ = self.replicas.pop(index)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(REPLICA_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def reconcile(self) -> None:
        self.watcher.poll()
        want = self.watcher.config.replicas
        for index, (proc, _) in list(self.replicas.items()):
            if proc.poll() is not None:
                del self.replicas[index]
                self.restarts += 1
        for index in sorted(i for i in self.replicas if i >= want):
            self._stop_replica(index)
        for index in range(want):
            if index not in self.replicas:
                self._spawn(index)
        self.publish()

    def publish(self) -> None:
        reps = [{"index": i, "pid": p.pid, "metrics_port": port} for i, (p, port) in sorted(self.replicas.items())]
        info = {"pid": os.getpid(), "port": self.args.port, "node_metrics_port": self.node_port,
                "replicas": reps, "restarts": self.restarts, "stopping": self.stopping}
        if info == self._published:
            return
        targets = [{"targets": [f"127.0.0.1:{r['metrics_port']}"], "labels": {"role": "replica",
                                                                              "replica": str(r["index"])}}
                   for r in reps]
        targets.append({"targets": [f"127.0.0.1:{self.node_port}"], "labels": {"role": "node"}})
        _write_json(self.folder / TARGETS_FILE, targets)
        _write_json(self.folder / BACKEND_FILE, info)
        self._published = info

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        while not self.stopping:
            self.reconcile()
            time.sleep(POLL_INTERVAL_S)
        for index in list(self.replicas):
            self._stop_replica(index)
        self.publish()
        return 0

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True


def stop_backend(state: Path) -> list[int]:
    """Stop the supervisor and every replica listed in backend.json, by PID (works after a crash)."""
    info_file = Path(state) / BACKEND_DIR / BACKEND_FILE
    if not info_file.exists():
        return []
    info = json.loads(info_file.read_text())
    marker = str(Path(state).resolve())
    stopped = [info["pid"]] if kill_pid(int(info["pid"]), marker) else []
    for rep in info.get("replicas", []):
        if kill_pid(int(rep["pid"]), marker):
            stopped.append(rep["pid"])
    info_file.unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="lab backend supervisor (started by 'runbook lab up')")
    p.add_argument("--state", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--node-metrics-port", type=int, default=0)
    return Supervisor(p.parse_args(argv)).run()


if __name__ == "__main__":
    raise SystemExit(main())
