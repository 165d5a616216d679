"""Private PostgreSQL, Redis and Prometheus servers on free loopback ports.

Used by the lab and by tests that need a clean server (pg_stat_statements preloaded, HypoPG,
CONFIG SET on a Redis nobody else uses). Every server:

* lives in its own folder (data, log, pid file) under a state directory;
* binds 127.0.0.1 only, on a port taken from the kernel (``free_port``);
* is started, waited on until it answers (bounded), and stopped by the PID it wrote;
* can be stopped from its folder alone (``stop_from_state``), e.g. after the starting process crashed.

The binaries come from Debian packages (postgresql-15, postgresql-15-hypopg, redis-server,
prometheus); ``scripts/setup.sh`` installs them when missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runbook_lib.lab.lab_errors import ServiceError
from runbook_lib.run_folder import process_alive, write_atomic

# Bounded waits (seconds). PostgreSQL starts in ~0.1 s and initdb takes ~0.4 s on these machines;
# Prometheus is ready in <0.1 s but its first scrape lands 5-6 s after start (target-sync throttle).
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
# PostgreSQL reads SIGTERM as "smart shutdown": it waits for every client to disconnect, so one idle
# connection made stop() wait STOP_TIMEOUT_S and then SIGKILL the postmaster. SIGINT is "fast shutdown"
# (clients are disconnected, the cluster shuts down cleanly): postgresql.org/docs/15/server-shutdown.html
STOP_SIGNALS = {"postgres": signal.SIGINT}
PG_BIN_CANDIDATES = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll ``check`` until it is true; raise ServiceError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet looks like any connection error
            pass
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = " | last log line: " + (log.read_text(errors="replace").strip().splitlines() or [""])[-1]
            raise ServiceError(f"{what} not ready after {timeout:.0f} s{tail}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


pid_alive = process_alive  # the lab's name for it (its callers and tests use it)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def log_tail(path: Path, n: int = 3) -> str:
    """The last ``n`` lines of a log, on one line: what a failed start says about itself."""
    if not path.exists():
        return ""
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])


def kill_pid(pid: int, expect_in_cmdline: str, timeout: float = STOP_TIMEOUT_S,
             sig: signal.Signals = signal.SIGTERM) -> bool:
    """``sig`` (SIGTERM) then SIGKILL ``pid``, only if its command line still contains ``expect_in_cmdline``
    (a recycled PID belongs to someone else). Returns True when something was stopped."""
    if not pid_alive(pid) or expect_in_cmdline not in cmdline(pid):
        return False
    os.kill(pid, sig)
    try:
        wait_until(lambda: not pid_alive(pid), timeout, f"pid {pid} exit")
    except ServiceError:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 5, f"pid {pid} exit after SIGKILL")
    return True


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200


@dataclass
class ServerInfo:
    kind: str
    port: int
    pid: int
    folder: str
    url: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _Server:
    kind = "server"
    binary_hint = ""

    def __init__(self, folder: str | Path, port: int | None = None):
        self.folder = Path(folder).resolve()
        self.port = port or free_port()
        self.pid: int | None = None

    @property
    def info_file(self) -> Path:
        return self.folder / "server.json"

    @property
    def log_file(self) -> Path:
        return self.folder / f"{self.kind}.log"

    def _write_info(self) -> None:
        assert self.pid is not None
        info = ServerInfo(self.kind, self.port, self.pid, str(self.folder), self.url)
        write_atomic(self.info_file, json.dumps(info.as_dict(), indent=2))

    @property
    def url(self) -> str:
        raise NotImplementedError

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        raise NotImplementedError

    def stop(self) -> bool:
        if self.pid is None:
            return stop_from_state(self.folder)
        stopped = kill_pid(self.pid, self._cmd_marker(), sig=STOP_SIGNALS.get(self.kind, signal.SIGTERM))
        self.info_file.unlink(missing_ok=True)
        return stopped

    def _cmd_marker(self) -> str:
        return str(self.port)


def _which(name: str, hint: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ServiceError(f"{name} not found on PATH", hint=hint)
    return path


def pg_bindir() -> Path:
    for cand in PG_BIN_CANDIDATES:
        if Path(cand, "initdb").exists():
            return Path(cand)
    raise ServiceError("PostgreSQL server binaries (initdb) not found", hint="run scripts/setup.sh (installs postgresql-15)")


class PostgresServer(_Server):
    """A private PostgreSQL cluster. ``initdb`` refuses root, so as root the cluster runs as ``postgres``."""

    kind = "postgres"

    def __init__(self, folder, port=None, preload=("pg_stat_statements",), settings: dict | None = None):
        super().__init__(folder, port)
        self.preload = tuple(preload)
        self.settings = dict(settings or {})

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def start(self):
        bindir = pg_bindir()
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            # every parent must be traversable by the postgres user
            for parent in self.folder.parents:
                if parent.exists() and not os.stat(parent).st_mode & 0o001:
                    raise ServiceError(
                        f"postgres cannot enter {parent} (mode {oct(os.stat(parent).st_mode & 0o777)})",
                        hint="put the state folder under a world-traversable path such as /tmp",
                    )
        if not (self.data_dir / "PG_VERSION").exists():
            r = subprocess.run(
                self._as_owner([str(bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                                "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]),
                capture_output=True, text=True, timeout=120,
            )
            if r.returncode != 0:
                raise ServiceError(f"initdb failed: {r.stderr.strip().splitlines()[-1:]}")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.folder}'",
            "fsync": "off",
            "shared_preload_libraries": "'" + ",".join(self.preload) + "'",
            "pg_stat_statements.track": "all",
            "log_min_messages": "warning",
        }
        conf.update({k: str(v) for k, v in self.settings.items()})
        (self.data_dir / "postgresql.auto.conf").write_text("".join(f"{k} = {v}\n" for k, v in conf.items()))
        if os.geteuid() == 0:
            shutil.chown(self.data_dir / "postgresql.auto.conf", "postgres", "postgres")
        r = subprocess.run(
            self._as_owner([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                            "-w", "-t", str(int(START_TIMEOUT_S)), "start"]),
            capture_output=True, text=True, timeout=START_TIMEOUT_S + 10,
        )
        if r.returncode != 0:
            tail = self.log_file.read_text(errors="replace").strip().splitlines()[-3:] if self.log_file.exists() else []
            raise ServiceError(f"PostgreSQL on port {self.port} did not start: {' | '.join(tail) or r.stderr.strip()}")
        self.pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        self._write_info()
        return self

    def _cmd_marker(self) -> str:
        return str(self.data_dir)


class RedisServer(_Server):
    kind = "redis"

    def __init__(self, folder, port=None, maxmemory: str | None = None, policy: str | None = None):
        super().__init__(folder, port)
        self.maxmemory = maxmemory
        self.policy = policy

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        exe = _which("redis-server", "run scripts/setup.sh (installs redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        pidfile = self.folder / "redis.pid"
        pidfile.unlink(missing_ok=True)
        argv = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "yes", "--pidfile", str(pidfile), "--logfile", str(self.log_file),
                "--dir", str(self.folder)]
        if self.maxmemory:
            argv += ["--maxmemory", self.maxmemory]
        if self.policy:
            argv += ["--maxmemory-policy", self.policy]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise ServiceError(f"redis-server on port {self.port} failed: {r.stderr.strip() or r.stdout.strip()}")
        wait_until(pidfile.exists, START_TIMEOUT_S, f"redis pid file {pidfile}", self.log_file)
        wait_until(lambda: pidfile.read_text().strip() != "", 5, "redis pid file content")
        self.pid = int(pidfile.read_text().strip())

        def ping() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        wait_until(ping, START_TIMEOUT_S, f"redis on port {self.port}", self.log_file)
        self._write_info()
        return self


class PrometheusServer(_Server):
    """Prometheus scraping ``targets`` (host:port strings) every ``scrape_interval``."""

    kind = "prometheus"

    def __init__(self, folder, port=None, targets: list[str] | None = None, scrape_interval: str = "2s",
                 job: str = "runbook", rule_files: list[str] | None = None):
        super().__init__(folder, port)
        self.targets = list(targets or [])
        self.scrape_interval = scrape_interval
        self.job = job
        self.rule_files = list(rule_files or [])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        targets = ", ".join(f"'{t}'" for t in [f"127.0.0.1:{self.port}", *self.targets])
        rules = "".join(f"  - '{r}'\n" for r in self.rule_files)
        return (
            f"global:\n  scrape_interval: {self.scrape_interval}\n  evaluation_interval: {self.scrape_interval}\n"
            + (f"rule_files:\n{rules}" if rules else "")
            + f"scrape_configs:\n  - job_name: '{self.job}'\n    static_configs:\n      - targets: [{targets}]\n"
        )

    def start(self):
        exe = _which("prometheus", "run scripts/setup.sh (installs the Debian prometheus package)")
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "prometheus.yml"
        cfg.write_text(self.config_text())
        argv = [exe, f"--config.file={cfg}", f"--storage.tsdb.path={self.folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=7d", "--log.level=warn"]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = proc.pid
        self._write_info()
        try:
            wait_until(lambda: _http_ok(f"{self.url}/-/ready"), START_TIMEOUT_S, f"prometheus on port {self.port}",
                       self.log_file)
        except ServiceError:
            self.stop()
            raise
        return self

    def wait_first_scrape(self, timeout: float = 30.0) -> None:
        """Block until every target has been scraped once (the first scrape lands ~5 s after start)."""
        want = 1 + len(self.targets)

        def scraped() -> bool:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?query=up", timeout=2) as r:
                res = json.load(r)["data"]["result"]
            return len(res) >= want

        wait_until(scraped, timeout, f"first scrape of {want} target(s) by prometheus", self.log_file)

    def _cmd_marker(self) -> str:
        return str(self.folder / "prometheus.yml")


_KINDS = {"postgres": PostgresServer, "redis": RedisServer, "prometheus": PrometheusServer}


def stop_from_state(folder: str | Path) -> bool:
    """Stop the server whose ``server.json`` is in ``folder``: works after the starter crashed."""
    folder = Path(folder)
    info_file = folder / "server.json"
    if not info_file.exists():
        return False
    info = json.loads(info_file.read_text())
    marker = {"postgres": str(folder / "data"), "prometheus": str(folder / "prometheus.yml")}.get(
        info["kind"], str(info["port"]))
    stopped = kill_pid(int(info["pid"]), marker, sig=STOP_SIGNALS.get(info["kind"], signal.SIGTERM))
    info_file.unlink(missing_ok=True)
    return stopped


def read_state(folder: str | Path) -> ServerInfo | None:
    f = Path(folder) / "server.json"
    if not f.exists():
        return None
    return ServerInfo(**json.loads(f.read_text()))
