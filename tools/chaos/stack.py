"""The pieces a fault scenario runs: its own database and topic prefix on the stack,
a private broker it may stop, the services as processes it may kill, and small
HTTP/SQL helpers. Everything here talks to the real components over the network."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "broker"))
from pause_repro import Broker as _Broker  # noqa: E402  (the same private tansu the repro starts)

LISTEN_VAR = {
    "api": "PMCORE_API_LISTEN",
    "worker": "PMCORE_WORKER_LISTEN",
    "der-gateway-relay": "PMCORE_RELAY_LISTEN",
    "audit-log": "PMCORE_AUDIT_LOG_LISTEN",
    "messaging": "PMCORE_MESSAGING_LISTEN",
    "scheduler": "PMCORE_SCHEDULER_LISTEN",
    "bucket-watcher": "PMCORE_BUCKET_WATCHER_LISTEN",
}
# Services that keep /readyz and /metrics off their public port.
OPS_VAR = {
    "api": "PMCORE_API_OPS_LISTEN",
    "der-gateway-relay": "PMCORE_RELAY_OPS_LISTEN",
    "audit-log": "PMCORE_AUDIT_LOG_OPS_LISTEN",
    "messaging": "PMCORE_MESSAGING_OPS_LISTEN",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate(proc, grace_s=30):
    """SIGTERM, then SIGKILL if it has not exited within `grace_s`."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def log(msg):
    print(f"\033[1m[chaos]\033[0m {msg}", file=sys.stderr, flush=True)


def wait_for(what, probe, timeout_s, every_s=0.25):
    """Polls `probe` until it returns something truthy; raises after `timeout_s`."""
    deadline = time.time() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"{what} within {timeout_s} s")
        time.sleep(every_s)


def http(method, url, token=None, body=None, form=None, timeout=10):
    """(status, parsed JSON or text); status 0 when nothing answered."""
    headers = {}
    data = None
    if token:
        headers["authorization"] = f"Bearer {token}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["content-type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def token(api, client_id, secret):
    status, body = http("POST", f"{api}/oauth/token",
                        form={"grant_type": "client_credentials", "client_id": client_id,
                              "client_secret": secret})
    if status != 200:
        raise RuntimeError(f"token for {client_id}: {status} {body}")
    return body["access_token"]


class Broker(_Broker):
    """A private tansu with the index pmcore's stack adds (docs/decisions/0012)."""

    def __init__(self):
        super().__init__(os.environ.get("PMCORE_TANSU_BIN", "tansu"), "sqlite", free_port())
        # What it tells clients to connect to (a proxy in front of it, say).
        self.advertised_port = self.port

    @property
    def brokers(self):
        return f"127.0.0.1:{self.advertised_port}"

    def start(self):
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--storage-engine", "sqlite://tansu.db", "--listener-url", url,
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "broker.log"), "ab"))
        wait_for("the broker to listen", self._listens, 30, 0.1)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "broker", "tansu_indexes.py"),
                        os.path.join(self.dir, "tansu.db")], check=True)

    def _listens(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        """SIGTERM and wait, as an operator's restart would."""
        if self.proc:
            terminate(self.proc)
            self.proc = None


class World:
    """One scenario's database (migrated by the api) and topic prefix."""

    def __init__(self, name, build, workdir, brokers=None):
        tag = f"{random.randrange(16**6):06x}"
        self.db = f"pmcore_chaos_{name.replace('-', '_')}_{tag}"
        self.prefix = f"chaos-{name}-{tag}."
        self.build = build
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        base = os.environ["PMCORE_DATABASE_URL"]
        self.admin_url = base.rsplit("/", 1)[0] + "/postgres"
        self.url = base.rsplit("/", 1)[0] + "/" + self.db
        self.brokers = brokers or os.environ["PMCORE_KAFKA_BROKERS"]
        # What the services get instead of the defaults (e.g. addresses through a proxy).
        self.extra_env = {}
        self.psql_admin(f"create database {self.db}")

    def psql_admin(self, sql):
        subprocess.run(["psql", "-Atq", self.admin_url, "-c", sql], check=True,
                       env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"})

    def sql(self, query):
        out = subprocess.run(["psql", "-Atq", self.url, "-c", query], check=True, capture_output=True,
                             text=True, env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"})
        return out.stdout.strip()

    def scalar(self, query):
        return int(self.sql(query) or 0)

    def env(self, **extra):
        return {**os.environ, "PMCORE_DATABASE_URL": self.url, "PMCORE_KAFKA_TOPIC_PREFIX": self.prefix,
                "PMCORE_KAFKA_BROKERS": self.brokers, "PMCORE_LOG": "warn", "PMCORE_LOG_FORMAT": "text",
                "PMCORE_API_RATE_LIMIT_PER_SECOND": "100000", "PMCORE_API_RATE_LIMIT_BURST": "100000",
                **self.extra_env, **extra}

    def service(self, name, **extra):
        return Service(self, name, extra)

    def binary(self, name):
        return os.path.join(ROOT, "target", self.build, name)

    def drop(self):
        try:
            self.psql_admin(f"drop database if exists {self.db} with (force)")
        except subprocess.CalledProcessError:
            pass


class Service:
    """One service process on its own port; restartable on the same port."""

    def __init__(self, world, name, extra):
        self.world, self.name, self.extra = world, name, extra
        self.port = free_port()
        self.ops_port = free_port() if name in OPS_VAR else self.port
        self.proc = None
        self.starts = 0
        self.log_path = os.path.join(world.dir, f"{name}.log")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def ops_url(self):
        return f"http://127.0.0.1:{self.ops_port}"

    def start(self, ready_timeout_s=120):
        ports = {LISTEN_VAR[self.name]: f"127.0.0.1:{self.port}"}
        if self.name in OPS_VAR:
            ports[OPS_VAR[self.name]] = f"127.0.0.1:{self.ops_port}"
        env = self.world.env(**ports, **self.extra)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([self.world.binary(self.name)], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1
        if ready_timeout_s:
            self.wait_ready(ready_timeout_s)
        return self

    def ready(self):
        return http("GET", f"{self.ops_url}/readyz", timeout=2)[0] == 200

    def wait_ready(self, timeout_s):
        def probe():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            return self.ready()
        wait_for(f"{self.name} ready", probe, timeout_s)

    def kill(self):
        """SIGKILL: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            terminate(self.proc)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def crashed(self):
        """Exited on its own (not by our signal) with a failure status."""
        return self.proc is not None and self.proc.poll() not in (None, 0, -signal.SIGKILL, -signal.SIGTERM)

    def metric(self, name, **labels):
        """Sum of a Prometheus metric's samples whose labels include `labels`."""
        status, text = http("GET", f"{self.ops_url}/metrics", timeout=5)
        if status != 200 or not isinstance(text, str):
            return None
        total, seen = 0.0, False
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if head != name and not head.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
                seen = True
        return total if seen else None
