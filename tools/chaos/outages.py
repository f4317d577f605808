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

from stack import Broker, World, free_port, log, wait_for
from telemetry import Fleet, settle

READY_AGAIN_S = 30


class Proxy:
    """A TCP forwarder that can be cut and restored on the same port."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.conns = set()
        self.lock = threading.Lock()
        self.listener = None
        self.up()

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
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
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
