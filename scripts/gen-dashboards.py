#!/usr/bin/env python3
"""Write the Grafana dashboards built by agent/observe/dashboards.py into the Helm chart.

Usage: .venv/bin/python scripts/gen-dashboards.py [--check]
With --check, exit 1 when a file on disk differs from what the code builds.
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.observe.dashboards import DASHBOARDS  # noqa: E402

TARGET = REPO / "deploy/helm/temper/dashboards"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    TARGET.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2, sort_keys=True) + "\n"
        path = TARGET / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print("stale dashboards, run scripts/gen-dashboards.py: " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
