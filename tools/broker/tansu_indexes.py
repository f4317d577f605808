#!/usr/bin/env python3
"""Adds the indexes tansu 0.6's SQLite schema lacks, to a broker's database file.

tansu 0.6 (`tansu-storage` ddl/040-header.sql) creates `header` without any index,
and its fetch path runs `header_fetch.sql` once per fetched record: a join of
`header` on `(topition, offset_id)` that SQLite can only answer by scanning every
header of every topic (`EXPLAIN QUERY PLAN`: `SCAN h`). Every record our services
write carries seven CloudEvents headers, so each fetched record cost a scan of the
whole table: the broker read ~1.4 GB/s from its page cache and stalled for tens of
seconds when a consumer caught up on 10,000 commands (docs/decisions/0012).
`watermark` is looked up by `topition` on every produce and fetch without an index
either.

Usage: tansu_indexes.py PATH/TO/tansu.db [--wait-s 30]

Idempotent (`create index if not exists`). Run it right after the broker starts:
tansu creates its tables at start-up, and this waits for them. Building the header
index on an existing database holds SQLite's write lock for about a second per
million headers; the broker waits on it (busy timeout) rather than failing.
"""

import argparse
import sqlite3
import sys
import time

INDEXES = {
    "pmcore_header_record": "create index if not exists pmcore_header_record on header (topition, offset_id)",
    "pmcore_watermark_topition": "create index if not exists pmcore_watermark_topition on watermark (topition)",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--wait-s", type=float, default=30.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait_s
    while True:
        try:
            db = sqlite3.connect(args.db, timeout=30)
            tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
            if {"header", "watermark"} <= tables:
                break
            db.close()
        except sqlite3.Error as error:
            if time.monotonic() > deadline:
                print(f"tansu_indexes: {args.db}: {error}", file=sys.stderr)
                return 1
        if time.monotonic() > deadline:
            print(f"tansu_indexes: {args.db} has no tansu schema after {args.wait_s} s", file=sys.stderr)
            return 1
        time.sleep(0.2)
    present = {r[0] for r in db.execute("select name from sqlite_master where type = 'index'")}
    for name, ddl in INDEXES.items():
        if name not in present:
            db.execute(ddl)
    db.commit()
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
