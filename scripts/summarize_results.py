"""Add up the JUnit reports of every tox environment into one closing line."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(folder: str) -> int:
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    reports = sorted(Path(folder).glob("*.xml"))
    for report in reports:
        root = ET.parse(report).getroot()
        for suite in root.iter("testsuite"):
            for field in totals:
                totals[field] += int(suite.get(field, 0))
    failed = totals["failures"] + totals["errors"]
    passed = totals["tests"] - failed - totals["skipped"]
    if not reports:
        return 0  # only lint or types ran
    print(f"{len(reports)} test runs (JUnit reports in {folder}/)")
    print(f"{passed} passed, {failed} failed, {totals['skipped']} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "test-results"))
