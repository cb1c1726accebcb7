"""What every Python compatibility program shares: its command line, the deterministic COPY
data, and the one-line-per-check report. Kept free of any driver so both programs use it."""

import argparse
import hashlib
import sys
import time
import traceback

# Checks a program knows; the Rust test names them when it leaves some out for a mode.
ALL_CHECKS = (
    "named_statements",
    "shared_statement_names",
    "binary_results",
    "pipeline",
    "copy",
    "large_result",
    "cancel",
    "sqlstates",
    "rollback_after_error",
    "set_isolation",
    "listen_notify",
)

# Rows and width of the large result: about 10 MB, so it spans many relay buffers.
LARGE_ROWS = 10_000
LARGE_WIDTH = 1_000

# Rows sent through COPY in each direction.
COPY_ROWS = 50_000


def parse_args(driver):
    """The command line every compat program takes (see tests/compat/README.md)."""
    p = argparse.ArgumentParser(description=f"{driver} checks against PostgreSQL or pglease")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--dbname", required=True)
    p.add_argument("--mode", choices=("direct", "session", "transaction"), required=True)
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated checks not to run (what the mode does not support yet)",
    )
    p.add_argument(
        "--pooler-settings",
        action="store_true",
        help="configure the driver as its docs say for transaction poolers (no named statements)",
    )
    p.add_argument("--only", default="", help="comma-separated checks to run (by hand)")
    args = p.parse_args()
    args.skip = {s for s in args.skip.split(",") if s}
    args.only = {s for s in args.only.split(",") if s}
    unknown = (args.skip | args.only) - set(ALL_CHECKS)
    if unknown:
        p.error(f"unknown checks: {', '.join(sorted(unknown))}")
    return args


def copy_lines():
    """COPY text-format lines, each with a tab, a backslash escape and non-ASCII text, so a
    proxy that mangles bytes changes the checksum."""
    for i in range(1, COPY_ROWS + 1):
        yield f"{i}\trow {i} \\\\ caf\u00e9 {i * 7919 % 10007}\n".encode()


def copy_digest():
    """SHA-256 of all of copy_lines(), the bytes COPY TO must give back."""
    h = hashlib.sha256()
    for line in copy_lines():
        h.update(line)
    return h.hexdigest()


def wanted(args):
    """The checks to run, in ALL_CHECKS order."""
    return [
        c for c in ALL_CHECKS if c not in args.skip and (not args.only or c in args.only)
    ]


def report(name, ok, started, detail=""):
    """Prints one check's line: `ok NAME (0.12s)` or `FAIL NAME (0.12s): why`."""
    took = f"{time.monotonic() - started:.2f}s"
    if ok:
        print(f"ok   {name} ({took})", flush=True)
    else:
        print(f"FAIL {name} ({took}): {detail}", flush=True)


def finish(driver, failures, ran, skipped):
    """The closing line and exit status: non-zero when any check failed or none ran."""
    print(f"{driver}: {ran - failures} passed, {failures} failed, {len(skipped)} skipped"
          + (f" ({', '.join(sorted(skipped))})" if skipped else ""), flush=True)
    if ran == 0:
        print(f"{driver}: no check ran", flush=True)
        sys.exit(2)
    sys.exit(1 if failures else 0)


def describe(exc):
    """An exception with its SQLSTATE when it has one, and the last frames for context."""
    tb = traceback.format_exception(exc)
    return "".join(tb[-3:]).strip().replace("\n", " | ")


class CheckFailed(Exception):
    """A check saw something other than what PostgreSQL gives directly."""


def expect(cond, what):
    """Raises CheckFailed with `what` unless `cond`."""
    if not cond:
        raise CheckFailed(what)
