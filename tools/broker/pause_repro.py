#!/usr/bin/env python3
"""The embedded broker on its own, outside pmcore: does a plain consumer group (Python,
confluent-kafka, librdkafka) recover after the broker stalls past its session timeout,
and does a broker restarted on its data serve a new group every record?

  pause_repro.py [--storage sqlite|postgres://...] [--rebalance-timeout-ms N] ...

It starts a private tansu (its own port and data), writes records, consumes them in a
group, freezes the broker with SIGSTOP for --pause-s, lets it go on, writes as many
again and waits for the group to read them all; then kills the broker, starts it on the
same data and reads everything with a new group. When the group stays stuck after the
stall, it tries a new member of the same group, then what pmcore's consumers do: the
group's next generation seeded with its committed offsets. One line per phase, then
`broker: passed|failed`; exit status 0 only when both phases read every record (or,
with --accept-moved, when the next generation did).

Kept in the suite (scripts/test.sh) with the settings pmcore's consumers use, so a tansu
upgrade or a configuration change shows at once whether the broker itself behaves;
docs/decisions/0011-embedded-broker-evidence.md has the runs behind those settings.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, storage, port):
        self.binary, self.storage, self.port = binary, storage, port
        self.dir = tempfile.mkdtemp(prefix="pmcore-broker-repro-")
        self.proc = None

    def start(self):
        url = f"tcp://127.0.0.1:{self.port}"
        engine = "sqlite://tansu.db" if self.storage == "sqlite" else self.storage
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--storage-engine", engine, "--listener-url", url,
             "--advertised-listener-url", url],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "broker.log"), "ab"))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("the broker did not listen within 30 s")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def produce(bootstrap, topic, start, count):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
                  "max.in.flight.requests.per.connection": 1, "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(topic, key=str(i).encode(), value=f"record {i}".encode())
        p.poll(0)
    left = p.flush(60)
    if left:
        raise SystemExit(f"{left} records not acknowledged by the broker")


def consume_until(consumer, seen, want, timeout_s):
    """Reads until `want` distinct records were seen or nothing new came for timeout_s."""
    last_new = time.time()
    while len(seen) < want and time.time() - last_new < timeout_s:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        before = len(seen)
        seen.add(m.value())
        if len(seen) > before:
            last_new = time.time()
    return len(seen) >= want


def group_consumer(bootstrap, group, args):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": True,
                     "session.timeout.ms": args.session_timeout_ms,
                     "heartbeat.interval.ms": 3000,
                     "max.poll.interval.ms": args.rebalance_timeout_ms,
                     **({"debug": os.environ["REPRO_DEBUG"]} if os.environ.get("REPRO_DEBUG") else {}),
                     **({"group.instance.id": f"{group}-static"} if args.static else {})})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tansu", default=shutil.which("tansu") or os.path.expanduser("~/.cargo/bin/tansu"))
    ap.add_argument("--storage", default="sqlite", help="sqlite (a file of its own) or a postgres:// URL")
    ap.add_argument("--records", type=int, default=3000, help="written before and again after the stall")
    ap.add_argument("--pause-s", type=float, default=20)
    ap.add_argument("--session-timeout-ms", type=int, default=10000)
    ap.add_argument("--rebalance-timeout-ms", type=int, default=30000,
                    help="max.poll.interval.ms, which librdkafka also sends as the rebalance timeout")
    ap.add_argument("--recover-s", type=float, default=90, help="how long the group may take after the stall")
    ap.add_argument("--static", action="store_true", help="static membership (group.instance.id)")
    ap.add_argument("--accept-moved", action="store_true",
                    help="exit 0 when a stuck group recovers in its next generation (what pmcore's consumers do)")
    args = ap.parse_args()

    broker = Broker(args.tansu, args.storage, free_port())
    bootstrap = f"127.0.0.1:{broker.port}"
    topic = f"repro-{int(time.time())}"
    results = {}
    try:
        broker.start()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
        produce(bootstrap, topic, 0, args.records)
        consumer = group_consumer(bootstrap, f"{topic}-group", args)
        consumer.subscribe([topic])
        seen = set()
        if not consume_until(consumer, seen, args.records, 60):
            print(f"before the stall: the group read {len(seen)} of {args.records}")
            results["pause"] = False
        else:
            broker.signal(signal.SIGSTOP)
            time.sleep(args.pause_s)
            broker.signal(signal.SIGCONT)
            resumed = time.time()
            produce(bootstrap, topic, args.records, args.records)
            ok = consume_until(consumer, seen, 2 * args.records, args.recover_s)
            results["pause"] = ok
            took = f"in {time.time() - resumed:.1f} s" if ok else f"stuck at {len(seen)} of {2 * args.records}"
            print(f"stall of {args.pause_s:.0f} s past a {args.session_timeout_ms} ms session "
                  f"(rebalance timeout {args.rebalance_timeout_ms} ms): the group read every record {took}"
                  if ok else
                  f"stall of {args.pause_s:.0f} s past a {args.session_timeout_ms} ms session "
                  f"(rebalance timeout {args.rebalance_timeout_ms} ms): the group is {took}")
            if not ok:
                # A new member of the same group (what a plain restart of a consumer does).
                consumer.close()
                consumer = group_consumer(bootstrap, f"{topic}-group", args)
                consumer.subscribe([topic])
                rescued = consume_until(consumer, seen, 2 * args.records, 30)
                print("a new member of the same group read the rest" if rescued
                      else f"a new member of the same group is stuck too, at {len(seen)}")
                if not rescued:
                    # What pmcore's consumers do (libs/kafka/src/home.rs): the group's
                    # next generation, seeded with the stuck group's committed offsets.
                    offsets = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
                    consumer.close()
                    consumer = group_consumer(bootstrap, f"{topic}-group.g1", args)
                    consumer.commit(offsets=[o for o in offsets if o.offset >= 0], asynchronous=False)
                    consumer.subscribe([topic])
                    moved = time.time()
                    rescued = consume_until(consumer, seen, 2 * args.records, args.recover_s)
                    print(f"the group's next generation, seeded with its offsets, read the rest in "
                          f"{time.time() - moved:.1f} s" if rescued
                          else f"the group's next generation is stuck too, at {len(seen)}")
                results["moved"] = rescued
        consumer.close()

        broker.kill()
        broker.start()
        fresh = group_consumer(bootstrap, f"{topic}-after-restart", args)
        fresh.subscribe([topic])
        seen_after = set()
        total = 2 * args.records  # every one of them was acknowledged by the broker
        ok = consume_until(fresh, seen_after, total, 60)
        results["restart"] = ok
        print(f"restarted on its data: a new group read {len(seen_after)} of {total}")
        fresh.close()
    finally:
        broker.cleanup()
    passed = all(results.get(k) for k in ("pause", "restart"))
    rescued = results.get("moved") and results.get("restart")
    verdict = "passed" if passed else ("failed; moving the group recovers it" if rescued else "failed")
    print(f"broker ({args.storage}): {verdict}")
    if args.accept_moved and rescued:
        sys.exit(0)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
