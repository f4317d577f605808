#!/usr/bin/env python3
"""A Kafka subscriber written as an outside team would write one: Python, confluent-kafka
and fastavro, given only pmcore's committed contract (asyncapi/asyncapi.yaml and
asyncapi/schemas/*.avsc), never pmcore's code.

It reads every record on every topic of every channel the AsyncAPI document lists (under
any topic prefix: each test run and deployment has its own) written since --since-ms,
and fails on any record it cannot read as the contract says:

- CloudEvents headers: ce_specversion 1.0, ce_id a UUIDv7, ce_source, ce_type one of the
  channel's message types, ce_time RFC 3339, ce_subject, content-type application/avro;
  on domain topics (pm.*) the key is the subject;
- value: the Avro single-object encoding (C3 01, CRC-64-AVRO fingerprint of the schema's
  Parsing Canonical Form, datum), the fingerprint that of ce_type's own schema, decoded
  by fastavro to the last byte.

Dead-letter topics are not read (their records are, by definition, ones a consumer could
not process), nor records a test wrote as poison on purpose: those carry the header
`pmcore-test: poison`, and are counted.

Exit status 0 when every record read, 1 otherwise; a summary per channel on stdout.
"""
import argparse
import collections
import datetime
import glob
import io
import json
import os
import sys
import uuid

import yaml
from confluent_kafka import Consumer, TopicPartition
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form


def contract(root):
    """channel address -> {ce_type: schema file}; schema file -> (fingerprint, parsed)."""
    doc = yaml.safe_load(open(os.path.join(root, "asyncapi.yaml"), encoding="utf-8"))
    messages = doc["components"]["messages"]
    channels = {}
    for channel in doc["channels"].values():
        address = channel.get("address", "")
        if not address or address.startswith("/") or "{" in address:
            continue  # the gateway WebSocket and the dead-letter template
        types = {}
        for ref in (channel.get("messages") or {}).values():
            message = messages[ref["$ref"].rsplit("/", 1)[1]]
            ce_type = message.get("x-cloudevents-type")
            schema_ref = message.get("payload", {}).get("schema", {}).get("$ref", "")
            if ce_type and schema_ref:
                types[ce_type] = os.path.basename(schema_ref)
        channels[address] = types
    schemas = {}
    for path in glob.glob(os.path.join(root, "schemas", "*.avsc")):
        raw = json.load(open(path, encoding="utf-8"))
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))
        schemas[os.path.basename(path)] = (fp, parse_schema(raw))
    return channels, schemas


def check(msg, address, channels, schemas):
    """The reason this record breaks the contract, or None."""
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (msg.headers() or [])}
    if headers.get("ce_specversion") != "1.0":
        return f"ce_specversion {headers.get('ce_specversion')!r}"
    try:
        if uuid.UUID(headers.get("ce_id", "")).version != 7:
            return f"ce_id {headers['ce_id']} is not a UUIDv7"
    except ValueError:
        return f"ce_id {headers.get('ce_id')!r} is not a UUID"
    for name in ("ce_source", "ce_subject"):
        if not headers.get(name):
            return f"no {name}"
    ce_type = headers.get("ce_type")
    if ce_type not in channels[address]:
        return f"ce_type {ce_type!r} is not a message of channel {address}"
    try:
        datetime.datetime.fromisoformat(headers.get("ce_time", "").replace("Z", "+00:00"))
    except ValueError:
        return f"ce_time {headers.get('ce_time')!r} is not RFC 3339"
    if headers.get("content-type") != "application/avro":
        return f"content-type {headers.get('content-type')!r}"
    key = (msg.key() or b"").decode("utf-8", "replace")
    if address.startswith("pm.") and key != headers["ce_subject"]:
        return f"key {key!r} is not the subject {headers['ce_subject']!r}"
    body = msg.value() or b""
    if body[:2] != b"\xc3\x01":
        return f"value does not start with C3 01: {body[:10].hex()}"
    fp, schema = schemas[channels[address][ce_type]]
    if body[2:10] != fp:
        known = [f for f, (p, _) in schemas.items() if p == body[2:10]]
        return (f"fingerprint {body[2:10].hex()} is not that of {channels[address][ce_type]} ({fp.hex()})"
                + (f" but of {known[0]}" if known else ", nor of any committed schema"))
    stream = io.BytesIO(body[10:])
    try:
        schemaless_reader(stream, schema)
    except Exception as e:  # fastavro raises many kinds; each is a contract breach here
        return f"{channels[address][ce_type]} cannot decode it: {type(e).__name__}: {e}"
    if stream.tell() != len(body) - 10:
        return f"{len(body) - 10 - stream.tell()} bytes left after the datum"
    return None


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default=os.environ.get("PMCORE_KAFKA_BROKERS", "127.0.0.1:9092"))
    ap.add_argument("--contract", default=os.path.join(here, "..", "..", "asyncapi"))
    ap.add_argument("--since-ms", type=int, default=0, help="skip records older than this (ms since the epoch)")
    ap.add_argument("--require", action="append", default=[],
                    help="a channel address that must hold at least one record (repeatable)")
    ap.add_argument("--require-all", action="store_true", help="every channel must hold a record")
    args = ap.parse_args()

    channels, schemas = contract(args.contract)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "pmcore-contract-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 100,
                         "auto.offset.reset": "earliest"})
    topics = consumer.list_topics(timeout=30).topics
    # Longest address first, so `pm.files.v1` is not read as a prefix plus `files.v1`.
    addresses = sorted(channels, key=len, reverse=True)
    wanted = {}
    for name, meta in topics.items():
        if ".dlq." in name:
            continue
        address = next((a for a in addresses if name.endswith(a)), None)
        if address is not None:
            wanted[name] = (address, list(meta.partitions))

    seen = collections.Counter()
    types = collections.defaultdict(collections.Counter)
    poison = collections.Counter()
    failures = []
    # Every partition that holds records, read in one assignment: one fetch session
    # for thousands of small topics instead of one after another.
    todo = []
    for name, (address, partitions) in sorted(wanted.items()):
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=30)
            if high > low:
                todo.append(TopicPartition(name, p, low))
    open_parts = {(tp.topic, tp.partition) for tp in todo}
    if todo:
        consumer.assign(todo)
    idle = 0
    while open_parts and idle < 60:
        msg = consumer.poll(1.0)
        if msg is None:
            idle += 1
            continue
        idle = 0
        if msg.error():
            if msg.error().code() == -191:  # _PARTITION_EOF
                open_parts.discard((msg.topic(), msg.partition()))
                continue
            failures.append(f"{msg.topic()}: {msg.error()}")
            continue
        if msg.timestamp()[1] < args.since_ms:
            continue
        address = wanted[msg.topic()][0]
        headers = dict(msg.headers() or [])
        if headers.get("pmcore-test") == b"poison":
            poison[address] += 1
            continue
        seen[address] += 1
        types[address][headers.get("ce_type", b"?").decode("utf-8", "replace")] += 1
        problem = check(msg, address, channels, schemas)
        if problem:
            failures.append(f"{msg.topic()} partition {msg.partition()} offset {msg.offset()}: {problem}")
    for topic, partition in sorted(open_parts):
        failures.append(f"{topic} partition {partition} did not reach its end (60 s without a record)")
    consumer.close()

    for address in sorted(channels):
        kinds = ", ".join(f"{t.removeprefix('pmcore.')} {n}" for t, n in sorted(types[address].items()))
        extra = f" (+{poison[address]} test poison skipped)" if poison[address] else ""
        print(f"{address:24} {seen[address]:7} records{extra}  {kinds}")
    for address in (sorted(channels) if args.require_all else args.require):
        if seen[address] == 0:
            failures.append(f"{address}: no record to read (the scenario should have produced some)")
    if failures:
        print(f"\n{len(failures)} record(s) or topics break the contract:", file=sys.stderr)
        for f in failures[:50]:
            print(f"  {f}", file=sys.stderr)
        if len(failures) > 50:
            print(f"  ... and {len(failures) - 50} more", file=sys.stderr)
        sys.exit(1)
    print(f"\nall {sum(seen.values())} records on {len(wanted)} topics read with the committed schemas")


main()
