"""Schemathesis over every operation of the api's, the audit log's and messaging's
OpenAPI documents, every check on (scripts/api-fuzz.sh, on the release builds)."""
import os
import re
import subprocess

from stack import ROOT


def schemathesis(args):
    log_path = os.path.join(args.workdir, "schemathesis.log")
    with open(log_path, "wb") as out:
        status = subprocess.run([os.path.join(ROOT, "scripts", "api-fuzz.sh")], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PMCORE_FUZZ_BUILD": args.build}).returncode
    text = open(log_path, errors="replace").read()
    # One summary per document, e.g. "===== 29 passed in 41.20s =====".
    summaries = [m.group(1) for m in re.finditer(r"^=+ (.+?) in [\d.]+s =+$", text, re.M)]
    server_errors = len(re.findall(r"Server error", text))
    return "schemathesis", status == 0 and server_errors == 0 and len(summaries) == 3, {
        "documents": len(summaries), "operations": " / ".join(summaries).replace(" ", "_"),
        "server_errors": server_errors}
