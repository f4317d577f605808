"""Telemetry under faults: simulated gateways stream readings through the relay while a
fault plan stops the broker or kills the worker; afterwards every reading a gateway
had acknowledged must be in pm.telemetry, and the minute rollup must count each
stored reading once (a reading applied twice would count twice there)."""
import json
import os
import subprocess
import threading
import time

from stack import Broker, World, log, wait_for


class Fleet:
    """The api, the relay and the worker on one world, and a provisioned fleet."""

    def __init__(self, world, gateways, ders_per_gateway):
        self.world = world
        self.api = world.service("api", PMCORE_MIGRATE_ON_START="true").start()
        self.relay = world.service("der-gateway-relay", PMCORE_DATABASE_MAX_CONNECTIONS="20").start()
        self.worker = world.service("worker").start()
        self.credentials = os.path.join(world.dir, "credentials.json")
        self.fleet = os.path.join(world.dir, "fleet.json")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": open(os.path.join(world.dir, "setup.log"), "ab")}
        subprocess.run([world.binary("seed"), "--api", self.api.url, "--ders-per-aggregator", "0",
                        "--gateways-per-aggregator", "0", "--credentials", self.credentials],
                       check=True, env=world.env(), **quiet)
        subprocess.run([world.binary("gateway-sim"), "provision", "--api", self.api.url, "--credentials",
                        self.credentials, "--fleet", self.fleet, "--count", str(gateways),
                        "--ders-per-gateway", str(ders_per_gateway), "--label", "chaos"],
                       check=True, env=world.env(), **quiet)

    def stream(self, seconds, interval_ms=1000):
        """Starts the simulator; returns the process (its stdout is the summary)."""
        out = open(os.path.join(self.world.dir, "summary.json"), "wb")
        err = open(os.path.join(self.world.dir, "sim.log"), "ab")
        return subprocess.Popen(
            [self.world.binary("gateway-sim"), "run", "--relay", f"ws://127.0.0.1:{self.relay.port}/v1/gateway",
             "--fleet", self.fleet, "--reading-interval-ms", str(interval_ms), "--batch-interval-ms", "1000",
             "--duration-s", str(seconds), "--report-every-s", "10"],
            stdout=out, stderr=err, env=self.world.env())

    def summary(self):
        with open(os.path.join(self.world.dir, "summary.json")) as f:
            return json.load(f)

    def stop(self):
        for s in (self.worker, self.relay, self.api):
            s.stop()


def settle(world, want, stall_s):
    """Waits until `want` rows are stored or the count stops moving for `stall_s`."""
    stored, last, last_move = 0, -1, time.time()
    while time.time() - last_move < stall_s:
        stored = world.scalar("select count(*) from pm.telemetry")
        if stored >= want:
            break
        if stored != last:
            last, last_move = stored, time.time()
        time.sleep(1)
    return stored


def verdict(name, world, fleet, faults, planned, stall_s):
    summary = fleet.summary()
    acked = summary["acked"]
    stored = settle(world, acked, stall_s)
    counted = world.scalar("select coalesce(sum(samples), 0) from pm.telemetry_1m")
    # A fault the stream ended before is a fault not tried.
    injected = sum(faults.values())
    passed = acked > 0 and stored >= acked and counted == stored and injected == planned
    counts = {"acknowledged": acked, "stored": stored, "rollup_samples": counted,
              "refused": summary.get("refused", 0), **faults}
    return name, passed, counts


def run_with_faults(name, args, plan, planned):
    """`plan(fleet, broker, stop_event, faults)` runs in a thread while the simulator streams."""
    broker = Broker()
    broker.start()
    world = World(name, args.build, args.workdir, brokers=broker.brokers)
    fleet = None
    try:
        gateways, ders = (20, 500) if not args.short else (8, 250)
        fleet = Fleet(world, gateways, ders)
        seconds = args.stream_s
        log(f"{name}: {gateways * ders} DERs, one reading a second each, for {seconds} s")
        sim = fleet.stream(seconds)
        stop = threading.Event()
        faults = {}
        worker = threading.Thread(target=plan, args=(fleet, broker, stop, faults, seconds), daemon=True)
        worker.start()
        sim.wait()
        stop.set()
        worker.join()
        # Whatever the plan left stopped comes back before the count.
        if broker.proc is None:
            broker.start()
        if not fleet.worker.alive():
            fleet.worker.start()
        return verdict(name, world, fleet, faults, planned, args.stall_s)
    finally:
        if fleet:
            fleet.stop()
        broker.cleanup()
        if not args.keep:
            world.drop()


def broker_restarts(args):
    """The broker stopped and started `n` times gracefully and `n` times with SIGKILL."""
    n = 2 if args.short else 5

    def plan(fleet, broker, stop, faults, seconds):
        # Each outage lasts about 4 s (2 s down, then the broker's start).
        gap = max(1.0, seconds / (2 * n + 1) - 4)
        faults.update(graceful=0, killed=0)
        for i in range(2 * n):
            if stop.wait(gap):
                return
            if i % 2 == 0:
                broker.stop()
                faults["graceful"] += 1
            else:
                broker.kill()
                faults["killed"] += 1
            time.sleep(2)
            broker.start()

    return run_with_faults("broker-restarts", args, plan, 2 * n)


def worker_kills(args):
    """The worker SIGKILLed `n` times while readings stream, restarted each time."""
    n = 5 if args.short else 20

    def plan(fleet, broker, stop, faults, seconds):
        gap = max(0.5, seconds / (n + 1) - 0.5)
        faults["kills"] = 0
        for _ in range(n):
            if stop.wait(gap):
                return
            fleet.worker.kill()
            faults["kills"] += 1
            fleet.worker.start(ready_timeout_s=0)
        wait_for("the worker ready after its last kill", fleet.worker.ready, 120)

    return run_with_faults("worker-kills", args, plan, n)
