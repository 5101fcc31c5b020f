#!/usr/bin/env python3
"""Counts the real results of one `bazel test` invocation, for tools/test.sh.

Usage: count_results.py --log BAZEL_OUTPUT --testlogs DIR --exit-code N
                        [--phase NAME]

Reads the test summary lines of the Bazel output (`//pkg:target  STATUS ...`)
to learn which tests this invocation covered, then each one's test.xml under
the testlogs directory (every shard):

  * a <testcase> with <failure> or <error> is failed; with <skipped>,
    result="skipped" or status="notrun" (gtest's GTEST_SKIP and DISABLED_)
    it is skipped; otherwise passed;
  * a test whose XML Bazel generated itself (no own JUnit output: sh_test and
    other plain binaries) counts as one case, and as skipped when it passed
    and its test.log has a line starting with "SKIPPED:";
  * a test with no XML at all counts as one case with its summary status;
  * tests that FAILED TO BUILD or have NO STATUS count as failed, and when
    the build failed (exit code 1) without any test accounting for it, each
    distinct error location counts as a failure (at least one).

Prints details of every failure and skip to stderr and, on stdout, one line:
`PASSED FAILED SKIPPED`.
"""

import argparse
import glob
import os
import re
import sys
import xml.etree.ElementTree as ET

SUMMARY = re.compile(
    r"^(//\S+)\s+(?:\(cached\)\s+)?"
    r"(PASSED|FAILED TO BUILD|FAILED|NO STATUS|TIMEOUT|FLAKY|INCOMPLETE|SKIPPED)\b"
)
ERROR_LOCATION = re.compile(r"^ERROR: (/\S+?:\d+:\d+):")


def label_dir(testlogs, label):
    """//pkg/sub:name -> TESTLOGS/pkg/sub/name."""
    pkg, _, name = label[2:].partition(":")
    return os.path.join(testlogs, pkg, name)


def count_xml(path, log_path, label, notes):
    """Returns (passed, failed, skipped) for one test.xml."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        notes.append(f"failed  {label}: unreadable {path}: {e}")
        return 0, 1, 0
    cases = root.iter("testcase")
    passed = failed = skipped = 0
    cases = list(cases)
    for case in cases:
        name = f"{label} {case.get('classname', '')}.{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            node = case.find("failure")
            if node is None:
                node = case.find("error")
            notes.append(f"failed  {name}: {(node.get('message') or '').strip()[:200]}")
        elif (
            case.find("skipped") is not None
            or case.get("result") in ("skipped", "suppressed")
            or case.get("status") == "notrun"
        ):
            skipped += 1
            node = case.find("skipped")
            why = node.get("message", "") if node is not None else case.get("result", "")
            notes.append(f"skipped {name}: {why}")
        else:
            passed += 1
    # Bazel's own XML for a plain test binary: one case, named after the
    # target. A passing one that printed "SKIPPED:" was really skipped.
    if len(cases) == 1 and passed == 1 and os.path.exists(log_path):
        with open(log_path, errors="replace") as f:
            reason = next((l[len("SKIPPED:"):].strip() for l in f if l.startswith("SKIPPED:")), None)
        if reason is not None:
            notes.append(f"skipped {label}: {reason}")
            return 0, 0, 1
    return passed, failed, skipped


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--testlogs", required=True)
    ap.add_argument("--exit-code", type=int, required=True)
    ap.add_argument("--phase", default="test")
    args = ap.parse_args()

    statuses = {}
    errors = set()
    with open(args.log, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = SUMMARY.match(line)
            if m:
                statuses[m.group(1)] = m.group(2)
            m = ERROR_LOCATION.match(line)
            if m:
                errors.add(m.group(1))

    passed = failed = skipped = 0
    notes = []
    build_failures = 0
    for label, status in sorted(statuses.items()):
        if status in ("FAILED TO BUILD", "NO STATUS"):
            failed += 1
            build_failures += 1
            notes.append(f"failed  {label}: {status.lower()}")
            continue
        d = label_dir(args.testlogs, label)
        xmls = sorted(glob.glob(os.path.join(d, "**", "test.xml"), recursive=True))
        if not xmls:
            if status == "PASSED":
                passed += 1
            else:
                failed += 1
                notes.append(f"failed  {label}: {status.lower()} (no test.xml)")
            continue
        for x in xmls:
            p, fl, s = count_xml(x, os.path.join(os.path.dirname(x), "test.log"), label, notes)
            passed, failed, skipped = passed + p, failed + fl, skipped + s
        if status in ("FAILED", "TIMEOUT", "INCOMPLETE") and not any(
            n.startswith(f"failed  {label}") for n in notes
        ):
            # The XML may predate a timeout or crash; the summary is the truth.
            failed += 1
            notes.append(f"failed  {label}: {status.lower()}")

    if args.exit_code == 1 and build_failures == 0:
        n = max(1, len(errors))
        failed += n
        for loc in sorted(errors) or ["(see the Bazel output above)"]:
            notes.append(f"failed  build error at {loc}")

    for n in notes:
        print(f"[{args.phase}] {n}", file=sys.stderr)
    print(passed, failed, skipped)


if __name__ == "__main__":
    main()
