#!/usr/bin/env python3
"""`just chaos`: the fault suite. Each scenario runs pmcore's own binaries (release
builds by default) against the running embedded stack, in a database and topic prefix
of its own, injects one kind of fault and checks what must still hold. It prints
`scenario: passed|failed` with its counts, and ends with `N passed, M failed` (exit 1
when any failed).

  chaos.py [--short] [--only NAME ...] [--build release|debug] [--keep]

--short is the form `./dev test` runs: the same faults, fewer and on less data.
"""
import argparse
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import contracts  # noqa: E402
import domain  # noqa: E402
import outages  # noqa: E402
import reconnect  # noqa: E402
import telemetry  # noqa: E402
from stack import log  # noqa: E402

SCENARIOS = {
    "broker-restarts": telemetry.broker_restarts,
    "worker-kills": telemetry.worker_kills,
    "api-kills": domain.api_kills,
    "poison": domain.poison,
    "outages": outages.outages,
    "black-hole": outages.black_hole,
    "gateway-reconnect": reconnect.gateway_reconnect,
    "authorization": domain.authorization,
    "schemathesis": contracts.schemathesis,
}
# ./dev test runs scripts/api-fuzz.sh on its own, just before the short form.
NOT_IN_SHORT = {"schemathesis"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="fewer faults on less data (the form ./dev test runs)")
    ap.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="run only these scenarios")
    ap.add_argument("--build", default=os.environ.get("PMCORE_BUILD", "release"), choices=["release", "debug"])
    ap.add_argument("--keep", action="store_true", help="keep each scenario's database")
    ap.add_argument("--workdir", default=os.path.join(os.environ.get("PMCORE_STACK_DIR", tempfile.gettempdir()), "chaos"))
    ap.add_argument("--stall-s", type=int, default=120,
                    help="seconds without progress after which a scenario stops waiting for its data")
    args = ap.parse_args()
    args.stream_s = 30 if args.short else 100
    os.makedirs(args.workdir, exist_ok=True)

    results = []
    for name in args.only or SCENARIOS:
        if args.short and not args.only and name in NOT_IN_SHORT:
            print(f"{name}: skipped in the short form (./dev test runs it apart)", flush=True)
            continue
        started = time.time()
        try:
            _, passed, counts = SCENARIOS[name](args)
        except Exception as e:  # a scenario that cannot run has failed; the others still run
            traceback.print_exc()
            passed, counts = False, {"error": f"{type(e).__name__}: {e}"}
        counts["seconds"] = round(time.time() - started)
        line = " ".join(f"{k}={v}" for k, v in counts.items())
        print(f"{name}: {'passed' if passed else 'failed'} {line}", flush=True)
        results.append(passed)
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    log(f"logs and data of each scenario: {args.workdir}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
