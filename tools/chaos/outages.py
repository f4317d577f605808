"""Dependencies unreachable: the services reach Postgres, the broker and S3 through TCP
proxies the scenario cuts (every open connection reset, new ones refused) one after
the other while readings stream. During each cut the services that depend on it must
say so on /readyz; after it they must be ready again within 30 s, none may have
exited, and every acknowledged reading must be stored."""
import os
import socket
import threading
import time
import urllib.parse

from stack import Broker, World, free_port, http, log, token, wait_for
from telemetry import Fleet, settle

READY_AGAIN_S = 30


class Proxy:
    """A TCP forwarder that can be cut and restored on the same port."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.conns = set()
        # Connections whose bytes are read and dropped (see silence()).
        self.silenced = set()
        self.silent = False
        self.lock = threading.Lock()
        self.listener = None
        self.up()

    def silence(self):
        """A black hole: every open connection, and each one opened until speak(),
        stays open but carries nothing, as behind a firewall that lost its state
        without telling either side. A close still passes."""
        with self.lock:
            self.silent = True
            self.silenced |= self.conns

    def speak(self):
        """New connections carry data again; those silenced stay silent for good."""
        with self.lock:
            self.silent = False

    def up(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(256)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self):
        # shutdown() wakes the thread blocked in accept(); close() alone would not,
        # and the kernel would go on accepting connections.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            conns, self.conns = self.conns, set()
        for c in conns:
            try:
                # Linger 0 makes the close a reset, as a restarted host sends. shutdown()
                # first: close() alone leaves the connection open while a pump thread
                # is blocked reading it, and the peer sees a silent connection instead
                # (a black hole, which is another fault than this scenario's).
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns.update((client, upstream))
                if self.silent:
                    self.silenced.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if src in self.silenced:
                    continue
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            self.conns.discard(src)
            self.conns.discard(dst)
            self.silenced.discard(src)
            self.silenced.discard(dst)


def outages(args):
    cut_s = 15 if args.short else 60
    broker = Broker()
    kafka_proxy = Proxy(broker.port)
    broker.advertised_port = kafka_proxy.port  # clients come back through the proxy
    broker.start()
    pg = urllib.parse.urlsplit(os.environ["PMCORE_DATABASE_URL"])
    pg_proxy = Proxy(pg.port)
    s3 = urllib.parse.urlsplit(os.environ["PMCORE_S3_ENDPOINT"])
    s3_proxy = Proxy(s3.port)
    world = World("outages", args.build, args.workdir, brokers=f"127.0.0.1:{kafka_proxy.port}")
    world.service_url = world.url.replace(f":{pg.port}/", f":{pg_proxy.port}/")
    world.extra_env = {"PMCORE_DATABASE_URL": world.service_url,
                       "PMCORE_S3_ENDPOINT": f"http://127.0.0.1:{s3_proxy.port}"}
    fleet = None
    try:
        fleet = Fleet(world, 4, 250) if args.short else Fleet(world, 10, 500)
        services = {"api": fleet.api, "relay": fleet.relay, "worker": fleet.worker}
        sim = fleet.stream(0)
        time.sleep(5)
        counts, passed = {}, True
        for name, proxy, dependents in (("postgres", pg_proxy, ("api", "relay", "worker")),
                                        ("broker", kafka_proxy, ("api", "relay", "worker")),
                                        ("s3", s3_proxy, ("worker",))):
            log(f"outages: {name} unreachable for {cut_s} s")
            proxy.down()
            noticed = set()
            until = time.time() + cut_s
            while time.time() < until:
                for d in dependents:
                    if not services[d].ready():
                        noticed.add(d)
                time.sleep(1)
            proxy.up()
            cut_over = time.time()
            try:
                wait_for(f"every service ready after the {name} outage",
                         lambda: all(s.ready() for s in services.values()), READY_AGAIN_S + 30, 0.5)
                again = round(time.time() - cut_over, 1)
            except TimeoutError:
                again = None
            ok = set(dependents) == noticed and again is not None and again <= READY_AGAIN_S
            counts[f"{name}_noticed"] = f"{len(noticed)}/{len(dependents)}"
            counts[f"{name}_ready_again_s"] = again
            passed &= ok
            time.sleep(5)
        sim.send_signal(2)  # SIGINT: the simulator drains and prints its summary
        sim.wait(60)
        acked = fleet.summary()["acked"]
        stored = settle(world, acked, args.stall_s)
        exited = [n for n, s in services.items() if not s.alive()]
        panics = sum(open(s.log_path, errors="replace").read().count("panicked") for s in services.values())
        passed &= acked > 0 and stored >= acked and not exited and panics == 0
        counts |= {"acknowledged": acked, "stored": stored, "exited": ",".join(exited) or "none", "panics": panics}
        return "outages", passed, counts
    finally:
        if fleet:
            fleet.stop()
        broker.cleanup()
        if not args.keep:
            world.drop()


def black_hole(args):
    """Postgres goes silent rather than away: its connections stay open and carry
    nothing (Proxy.silence). Each service must say so on /readyz, give up the silent
    connections (its consumers within PMCORE_CONSUMER_DATABASE_TIMEOUT_S, set to 10 s
    here) and be ready again after; every acknowledged reading stored, and an event
    written after the fault published (the outbox relay's own connection went silent
    too)."""
    silent_s = 20 if args.short else 60
    limit_s = 10
    pg = urllib.parse.urlsplit(os.environ["PMCORE_DATABASE_URL"])
    pg_proxy = Proxy(pg.port)
    world = World("black-hole", args.build, args.workdir)
    world.service_url = world.url.replace(f":{pg.port}/", f":{pg_proxy.port}/")
    world.extra_env = {"PMCORE_DATABASE_URL": world.service_url,
                       "PMCORE_CONSUMER_DATABASE_TIMEOUT_S": str(limit_s),
                       "PMCORE_DATABASE_STATEMENT_TIMEOUT_MS": str(limit_s * 1000 // 2)}
    fleet = None
    try:
        fleet = Fleet(world, 2, 250) if args.short else Fleet(world, 10, 500)
        services = {"api": fleet.api, "relay": fleet.relay, "worker": fleet.worker}
        sim = fleet.stream(0)
        time.sleep(5)
        log(f"black-hole: postgres silent for {silent_s} s")
        pg_proxy.silence()
        noticed = set()
        until = time.time() + silent_s
        while time.time() < until:
            noticed |= {n for n, s in services.items() if not s.ready()}
            time.sleep(1)
        pg_proxy.speak()
        healed = time.time()
        try:
            wait_for("every service ready after the silence",
                     lambda: all(s.ready() for s in services.values()), READY_AGAIN_S + limit_s + 30, 0.5)
            again = round(time.time() - healed, 1)
        except TimeoutError:
            again = None
        admin = token(fleet.api.url, os.environ["PMCORE_BOOTSTRAP_CLIENT_ID"],
                      os.environ["PMCORE_BOOTSTRAP_CLIENT_SECRET"])
        status, _ = http("POST", f"{fleet.api.url}/v1/organizations", admin,
                         {"name": "After the silence", "kind": "aggregator"})
        try:
            wait_for("the outbox published after the silence",
                     lambda: world.scalar("select count(*) from pm.outbox") == 0, READY_AGAIN_S + 2 * limit_s + 30, 0.5)
            published = True
        except TimeoutError:
            published = False
        sim.send_signal(2)
        sim.wait(60)
        acked = fleet.summary()["acked"]
        stored = settle(world, acked, args.stall_s)
        exited = [n for n, s in services.items() if not s.alive()]
        passed = (len(noticed) == len(services) and again is not None and again <= READY_AGAIN_S + limit_s
                  and status == 201 and published and acked > 0 and stored >= acked and not exited)
        return "black-hole", passed, {
            "noticed": f"{len(noticed)}/{len(services)}", "ready_again_s": again,
            "write_after": status, "outbox_published": published,
            "acknowledged": acked, "stored": stored, "exited": ",".join(exited) or "none"}
    finally:
        if fleet:
            fleet.stop()
        if not args.keep:
            world.drop()
