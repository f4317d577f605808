"""Domain events and the REST API under faults: the api killed while it writes, poison
records on a domain topic, and another organization's ids in every operation."""
import json
import os
import random
import subprocess
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

from confluent_kafka import Consumer, Producer, TopicPartition

from stack import World, http, log, token, wait_for

BOOTSTRAP = (os.environ.get("PMCORE_BOOTSTRAP_CLIENT_ID", ""), os.environ.get("PMCORE_BOOTSTRAP_CLIENT_SECRET", ""))


def read_topic(brokers, topic, timeout_s=30):
    """Every record of a topic, from the start to its end when called."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"chaos-reader-{uuid.uuid4()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        ends = {}
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        records, deadline = [], time.time() + timeout_s
        while ends and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            records.append(m)
            if m.offset() + 1 >= ends.get(m.partition(), 0):
                ends.pop(m.partition(), None)
        return records
    finally:
        c.close()


def header(record, name):
    for k, v in record.headers() or []:
        if k == name:
            return v.decode(errors="replace") if v is not None else None
    return None


def api_kills(args):
    """The api SIGKILLed while a client creates organizations: every change that
    committed has its event on the topic, under one event id, and no event exists
    for a change that did not commit."""
    kills = 10 if args.short else 100
    world = World("api-kills", args.build, args.workdir)
    api = world.service("api", PMCORE_MIGRATE_ON_START="true").start()
    try:
        admin = token(api.url, *BOOTSTRAP)
        confirmed, attempts, stop = [], [0], threading.Event()

        def write():
            i = 0
            while not stop.is_set():
                i += 1
                attempts[0] += 1
                status, body = http("POST", f"{api.url}/v1/organizations", admin,
                                    {"name": f"chaos-{i}", "kind": "aggregator"}, timeout=5)
                if status == 201:
                    confirmed.append(body["id"])
                elif status == 0:
                    time.sleep(0.02)  # the api is down: the client retries, as any would

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        for _ in range(kills):
            time.sleep(random.uniform(0.1, 0.6))
            api.kill()
            api.start()
        time.sleep(1)
        stop.set()
        writer.join()
        # The last instance publishes what its predecessors left in the outbox.
        wait_for("the outbox to drain", lambda: world.scalar("select count(*) from pm.outbox") == 0, 60)
        committed = set(world.sql("select id from pm.organization").split())
        records = read_topic(world.brokers, world.prefix + "pm.organizations.v1")
        ids_by_subject = {}
        for r in records:
            if header(r, "ce_type") == "pmcore.organization.created.v1":
                ids_by_subject.setdefault(header(r, "ce_subject"), set()).add(header(r, "ce_id"))
        published = set(ids_by_subject)
        lost = committed - published
        phantom = published - committed
        split = [s for s, ids in ids_by_subject.items() if len(ids) > 1]
        unconfirmed_lost = set(confirmed) - committed
        created = sum(1 for r in records if header(r, "ce_type") == "pmcore.organization.created.v1")
        passed = not lost and not phantom and not split and not unconfirmed_lost and len(confirmed) > 0
        return "api-kills", passed, {
            "kills": kills, "requests": attempts[0], "confirmed": len(confirmed), "committed": len(committed),
            "events": len(published), "redelivered_copies": created - len(published),
            "missing": len(lost), "phantom": len(phantom), "two_ids": len(split),
            "confirmed_not_committed": len(unconfirmed_lost)}
    finally:
        api.stop()
        if not args.keep:
            world.drop()


def poison_records(template, n):
    """`n` records no consumer can apply, built from a real one: garbage and cut Avro,
    another event type's name on this payload, missing and malformed envelope headers,
    an oversized subject."""
    value = template.value()
    # Each its own event id: a copy of the template's would be a duplicate, not poison.
    headers = [(k, str(uuid.uuid4()).encode() if k == "ce_id" else v) for k, v in template.headers()]

    def with_header(name, new):
        return [(k, new if k == name else v) for k, v in headers]

    kinds = [
        ("garbage", bytes(random.getrandbits(8) for _ in range(64)), headers),
        ("cut-avro", value[: len(value) // 2], headers),
        ("wrong-type", value, with_header("ce_type", b"pmcore.settlement.finalized.v1")),
        ("no-id", value, [(k, v) for k, v in headers if k != "ce_id"]),
        ("bad-id", value, with_header("ce_id", b"not-a-uuid")),
        ("huge-subject", value, with_header("ce_subject", b"x" * 200_000)),
        ("huge-principal", value, with_header("ce_principal", b"user:" + b"x" * 5_000)),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def poison(args):
    """1% of the records on a domain topic are poison: each one reaches the audit
    log's dead-letter topic, every good one is in the trail, the consumer's lag goes
    back to 0 and it never crashes."""
    good = 700 if args.short else 2000  # 1% poison: 7 records, one of each kind, in the short form
    world = World("poison", args.build, args.workdir)
    api = world.service("api", PMCORE_MIGRATE_ON_START="true").start()
    audit = world.service("audit-log", PMCORE_MIGRATE_ON_START="true").start()
    try:
        admin = token(api.url, *BOOTSTRAP)
        topic = world.prefix + "pm.organizations.v1"

        def create(n, tag):
            for i in range(n):
                status, body = http("POST", f"{api.url}/v1/organizations", admin,
                                    {"name": f"chaos-{tag}-{i}", "kind": "aggregator"})
                if status != 201:
                    raise RuntimeError(f"creating an organization: {status} {body}")

        create(good // 2, "a")
        template = wait_for("a record on the topic", lambda: next(iter(read_topic(world.brokers, topic)), None), 60)
        bad = poison_records(template, max(1, good // 100))
        producer = Producer({"bootstrap.servers": world.brokers, "enable.idempotence": False,
                             "message.max.bytes": 1_000_000})
        for i, (kind, value, headers) in enumerate(bad):
            producer.produce(topic, key=f"poison-{i}".encode(), value=value,
                             headers=headers + [("chaos-poison", kind.encode())])
        if producer.flush(30):
            raise RuntimeError("the broker did not take the poison records")
        create(good - good // 2, "b")
        wait_for("the outbox to drain", lambda: world.scalar("select count(*) from pm.outbox") == 0, 60)

        events = {header(r, "ce_id") for t in world_topics(world.brokers, world.prefix + "pm.") if ".dlq." not in t
                  for r in read_topic(world.brokers, t) if header(r, "chaos-poison") is None}

        def dead_letters():
            found = []
            for t in world_topics(world.brokers, world.prefix):
                if ".dlq." in t:
                    found += read_topic(world.brokers, t)
            return found

        def settled():
            entries = world.scalar("select count(*) from audit.entry")
            return entries >= len(events) and len(dead_letters()) >= len(bad)

        try:
            wait_for("the audit log to record every good event and park every bad one", settled, args.stall_s, 1)
        except TimeoutError:
            pass
        entries = world.scalar("select count(*) from audit.entry")
        parked = dead_letters()
        parked_kinds = sorted({header(r, "chaos-poison") or "unmarked" for r in parked})
        lag = wait_lag(audit)
        passed = (entries == len(events) and len(parked) == len(bad)
                  and all(header(r, "chaos-poison") for r in parked) and lag == 0 and not audit.crashed())
        return "poison", passed, {"good": len(events), "poison": len(bad), "recorded": entries,
                                  "dead_lettered": len(parked), "kinds": ",".join(parked_kinds),
                                  "lag": lag, "restarts": audit.starts - 1}
    finally:
        audit.stop()
        api.stop()
        if not args.keep:
            world.drop()


def world_topics(brokers, prefix):
    c = Consumer({"bootstrap.servers": brokers, "group.id": "chaos-meta"})
    try:
        return [t for t in c.list_topics(timeout=10).topics if t.startswith(prefix)]
    finally:
        c.close()


def wait_lag(service, timeout_s=60):
    """The consumer's own lag gauge, once it reads 0 (or the last value)."""
    lag, deadline = None, time.time() + timeout_s
    while time.time() < deadline:
        lag = service.metric("pmcore_consumer_group_lag")
        if lag == 0:
            return 0
        time.sleep(1)
    return lag


# Operations on objects an organization owns; programs and dispatch events belong to
# the utility, which every organization may read.
OWNED = ("/v1/ders/", "/v1/gateways/", "/v1/enrollments/", "/v1/files/", "/v1/settlements/", "/v1/organizations/")


def authorization(args):
    """Every operation on another organization's objects, for every role a client of
    an aggregator may hold: 403 or 404, never the object; lists never show them."""
    world = World("authorization", args.build, args.workdir)
    api = world.service("api", PMCORE_MIGRATE_ON_START="true").start()
    # The seed imports a file of enrollments: the bucket watcher and the worker take it in.
    helpers = [world.service("worker").start(), world.service("bucket-watcher").start()]
    audit = world.service("audit-log", PMCORE_MIGRATE_ON_START="true").start()
    messaging = world.service("messaging").start()
    helpers += [audit, messaging]
    try:
        creds = os.path.join(world.dir, "credentials.json")
        subprocess.run([world.binary("seed"), "--api", api.url, "--ders-per-aggregator", "5",
                        "--gateways-per-aggregator", "1", "--credentials", creds], check=True, env=world.env(),
                       stdout=subprocess.DEVNULL, stderr=open(os.path.join(world.dir, "seed.log"), "wb"))
        clients = json.load(open(creds))["clients"]
        owner, other = clients[0], clients[1]
        owner_token = token(api.url, owner["client_id"], owner["client_secret"])
        admin = token(api.url, *BOOTSTRAP)

        def first_id(path):
            status, body = http("GET", f"{api.url}{path}", owner_token)
            items = (body or {}).get("items", []) if status == 200 else []
            return items[0]["id"] if items else None

        ids = {"ders": first_id("/v1/ders"), "gateways": first_id("/v1/gateways"),
               "enrollments": first_id("/v1/enrollments"), "files": first_id("/v1/files"),
               "settlements": first_id("/v1/settlements"), "organizations": owner["organization_id"]}
        owner_ids = {v for v in ids.values() if v}
        tokens = {}
        for role in ("aggregator", "auditor", "viewer", "operator", "program_manager", "admin"):
            status, body = http("POST", f"{api.url}/v1/organizations/{other['organization_id']}/clients", admin,
                                {"name": f"chaos-{role}", "roles": [role]})
            if status == 201:
                tokens[role] = token(api.url, body["id"], body["client_secret"])
        doc = http("GET", f"{api.url}/openapi.json")[1]
        now = datetime.now(timezone.utc).replace(microsecond=0)
        window = {"from": (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
                  "to": now.isoformat().replace("+00:00", "Z")}
        window |= {"starts_at": window["from"], "ends_at": window["to"]}
        bodies = {("patch", "/v1/ders/{id}"): {"external_id": "chaos"},
                  ("post", "/v1/enrollments/{id}/reject"): {"reason": "chaos"},
                  ("post", "/v1/enrollments/{id}/approve"): {},
                  ("post", "/v1/organizations/{id}/clients"): {"name": "chaos", "roles": ["viewer"]}}
        tried, leaks, unexpected, skipped, control = 0, [], [], 0, 0
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if method not in ("get", "post", "patch", "put", "delete"):
                    continue
                if "{" not in path:
                    if method != "get":
                        continue
                    for role, t in tokens.items():  # lists: none of the owner's objects
                        status, body = http("GET", f"{api.url}{path}", t)
                        tried += 1
                        if status == 200 and any(i in json.dumps(body) for i in owner_ids):
                            leaks.append(f"{role} GET {path}")
                    continue
                if not path.startswith(OWNED):
                    continue
                kind = path.split("/")[2]
                if not ids.get(kind):
                    skipped += 1
                    continue
                url = path.replace("{id}", ids[kind]).replace("{client_id}", owner["client_id"])
                query = [p["name"] for p in op.get("parameters", []) if p["in"] == "query" and p.get("required")]
                if query:
                    url += "?" + "&".join(f"{q}={window[q]}" for q in query)
                if method == "get":  # the control: the owner gets past authorization (a baseline
                    control += 1     # without history is a 422), so the request is right
                    status, _ = http("GET", f"{api.url}{url}", owner_token)
                    if status in (0, 401, 403, 404) or status >= 500:
                        unexpected.append(f"owner GET {path} -> {status}")
                tried += try_as_others(tokens, method, f"{api.url}{url}", path, bodies.get((method, path)),
                                       leaks, unexpected)
        # The audit log's and messaging's objects, from their own documents.
        n, more_leaks, more_unexpected, controls = others(api, audit, messaging, owner, tokens, admin)
        tried += n
        control += controls
        leaks += more_leaks
        unexpected += more_unexpected
        for line in leaks + unexpected:
            log(f"authorization: {line}")
        passed = not leaks and not unexpected and tried > 0
        return "authorization", passed, {"roles": len(tokens), "requests": tried, "leaks": len(leaks),
                                         "other_status": len(unexpected), "no_object": skipped,
                                         "owner_reads": control}
    finally:
        for s in helpers:
            s.stop()
        api.stop()
        if not args.keep:
            world.drop()


def try_as_others(tokens, method, url, path, body, leaks, unexpected):
    """Every role of the other organization calls `method url`: a success is a leak,
    anything but 403 or 404 unexpected. Returns how many calls were made."""
    for role, t in tokens.items():
        status, _ = http(method.upper(), url, t, body)
        if 200 <= status < 300:
            leaks.append(f"{role} {method.upper()} {path} -> {status}")
        elif status not in (403, 404):
            unexpected.append(f"{role} {method.upper()} {path} -> {status}")
    return len(tokens)


def others(api, audit, messaging, owner, tokens, admin):
    """The matrix over the audit log's and messaging's objects: the owner's endpoint,
    contact and message, one of its audit entries, and an export of the utility's.
    Inclusion and consistency proofs are hashes only, public by design (as in
    Certificate Transparency), so they are not in it."""
    owner_token = token(api.url, owner["client_id"], owner["client_secret"])
    status, body = http("POST", f"{api.url}/v1/organizations/{owner['organization_id']}/clients", admin,
                        {"name": "chaos-owner-auditor", "roles": ["auditor"]})
    owner_auditor = token(api.url, body["id"], body["client_secret"])
    m = f"{messaging.url}/v1/messaging"
    endpoint = http("POST", f"{m}/endpoints", owner_token, {"url": "http://127.0.0.1:9/chaos"})[1]["id"]
    contact = http("POST", f"{m}/contacts", owner_token, {"email": "owner@chaos.test"})[1]["id"]
    message = http("POST", f"{m}/endpoints/{endpoint}/test", owner_token)[1]["message_id"]

    def own_entry():
        status, body = http("GET", f"{audit.url}/v1/audit/entries?limit=1", owner_auditor)
        items = body.get("items", []) if status == 200 else []
        return str(items[0]["index"]) if items else None
    entry = wait_for("an audit entry of the owner's organization", own_entry, 60, 0.5)
    export = http("POST", f"{audit.url}/v1/audit/exports", admin, {"from": 0, "to": 1})[1]["id"]
    owned = {"endpoints": endpoint, "contacts": contact, "messages": message,
             "entries": entry, "exports": export}
    bodies = {("patch", "/v1/messaging/endpoints/{id}"): {"description": "chaos"},
              ("post", "/v1/messaging/endpoints/{id}/rotate-secret"): {}}
    tried, leaks, unexpected, control = 0, [], [], 0
    for service, owner_reader in ((messaging, owner_token), (audit, owner_auditor)):
        doc = http("GET", f"{service.url}/openapi.json")[1]
        for path, ops in doc["paths"].items():
            kind = path.split("/")[3]
            if "{" not in path:
                if "get" in ops and kind in owned:  # lists: none of the owner's objects
                    for role, t in tokens.items():
                        status, body = http("GET", f"{service.url}{path}", t)
                        tried += 1
                        listed = [str(i.get("id", i.get("index"))) for i in (body or {}).get("items", [])] \
                            if status == 200 else []
                        if owned[kind] in listed:
                            leaks.append(f"{role} GET {path}")
                continue
            if kind not in owned or path.endswith("/proof"):
                continue
            url = path.replace("{id}", owned[kind]).replace("{index}", owned[kind])
            if "get" in ops:  # the control: the owner reaches its own object
                control += 1
                status, _ = http("GET", f"{service.url}{url}", owner_reader if kind != "exports" else admin)
                if status != 200:
                    unexpected.append(f"owner GET {path} -> {status}")
            for method in ops:
                if method not in ("get", "post", "patch", "put", "delete"):
                    continue
                tried += try_as_others(tokens, method, f"{service.url}{url}", path, bodies.get((method, path)),
                                       leaks, unexpected)
    return tried, leaks, unexpected, control
