#!/usr/bin/env python3
"""Every recipe in the README's task table works, so a moved script or a renamed binary
fails the build instead of the next person who types it.

- The table and `just --summary` list the same recipes.
- The recipes that are cheap and leave nothing behind but files the repository already
  has run for real (generators, validators, lint); a generated file that differs from
  the committed one fails.
- The others (long, or they start, stop or wipe things) run as `just --dry-run`, which
  checks their arguments and dependencies, and every script, tool or binary their
  commands name must exist.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)

# Run for real: (recipe and arguments, files it may rewrite and must leave as committed).
RUN = [
    (["validate-asyncapi"], []),
    (["gen-asyncapi-spec", "json"], []),
    (["gen-asyncapi-spec", "html"], []),
    (["gen-api-spec", "json"], ["services/api/openapi.json"]),
    (["gen-audit-spec"], ["services/audit-log/openapi.json"]),
    (["gen-messaging-spec"], ["services/messaging/openapi.json"]),
    (["stack-ps"], []),
    (["db-create"], []),
]
# Dry-run only, with the arguments a person would give.
DRY = {
    "up": [], "stack-up": ["--profile", "testing"], "stack-down": [], "stack-destroy": [],
    "db-migrate": [], "db-drop": [], "seed-database": [], "seed-kafka": ["--pm", "--der-gateway", "--days", "3"],
    "simulate": ["--gateways", "2"], "simulate-start": [], "run": ["api"],
    "bench": [], "bench-api": [], "bench-telemetry": [], "bench-dispatch": [],
    "bench-settlement": [], "bench-import": [], "bench-audit": [], "bench-messaging": [], "bench-idle": [],
    "gen-api-spec": ["yaml"], "test": [], "coverage": [], "chaos": ["--short"],
    # The suite itself runs clippy on every target, which type-checks them too.
    "lint": [], "type-check": [],
}


def say(msg):
    print(f"\033[1m[recipes]\033[0m {msg}", file=sys.stderr, flush=True)


def table_recipes():
    text = open("README.md", encoding="utf-8").read()
    section = text.split("\n## Tasks\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if not line.startswith("| `just "):
            continue
        cell = line.replace("\\|", "/").split("|")[1]
        for code in re.findall(r"`([^`]+)`", cell):
            word = code.split()[0] if not code.startswith("just ") else code.split()[1]
            names.add(word)
    return names


def binaries():
    out = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"],
                         check=True, capture_output=True, text=True).stdout
    import json
    return {t["name"] for p in json.loads(out)["packages"] for t in p["targets"] if "bin" in t["kind"]}


def main():
    failures = []
    listed = table_recipes()
    recipes = set(subprocess.run(["just", "--summary"], check=True, capture_output=True,
                                 text=True).stdout.split()) - {"default"}
    if listed != recipes:
        failures.append(f"README task table and justfile differ: only in README {sorted(listed - recipes)}, "
                        f"only in justfile {sorted(recipes - listed)}")
    covered = {r[0][0] for r in RUN} | set(DRY)
    if recipes - covered:
        failures.append(f"recipes this check does not know how to try: {sorted(recipes - covered)}")

    for args, outputs in RUN:
        say(f"just {' '.join(args)}")
        done = subprocess.run(["just", *args], capture_output=True, text=True)
        if done.returncode != 0:
            failures.append(f"just {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-600:]}")
            continue
        for path in outputs:
            if subprocess.run(["git", "diff", "--quiet", "--", path]).returncode != 0:
                failures.append(f"just {' '.join(args)} wrote a {path} that differs from the committed one")

    bins = binaries()
    for name, args in sorted(DRY.items()):
        done = subprocess.run(["just", "--dry-run", name, *args], capture_output=True, text=True)
        if done.returncode != 0:
            failures.append(f"just --dry-run {name}: {done.stderr.strip()[-600:]}")
            continue
        text = done.stdout + done.stderr
        for path in set(re.findall(r"(?<![\w/.])((?:scripts|tools)/[\w./-]+)", text)):
            if not os.path.exists(path):
                failures.append(f"just {name} names {path}, which does not exist")
            elif path.endswith(".sh") and subprocess.run(["bash", "-n", path]).returncode != 0:
                failures.append(f"just {name}: {path} does not parse")
        for binary in set(re.findall(r"--bin[ =]([\w-]+)", text)):
            if binary not in bins and "{" not in binary:
                failures.append(f"just {name} runs --bin {binary}, which no package builds")
        say(f"just --dry-run {name}: ok")

    if failures:
        for f in failures:
            say(f"FAIL {f}")
        sys.exit(1)
    say(f"{len(recipes)} recipes: {len(RUN)} runs for real, {len(DRY)} dry-runs, all fine")


main()
