"""Writes alerts.yml, alerts_test.yml and dashboard.json from the finding catalogue.

    python monitoring/generate.py            # rewrite the three files in monitoring/
    python monitoring/generate.py --check    # exit 1 when a shipped file is out of date
    python monitoring/generate.py --out DIR --runbook-base https://git.example.com/dropdoc/blob/main/

The building blocks are in monitoring/dropdoc_mixin/; why the windows and `for:` durations
are what they are: monitoring/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # dropdoc_mixin, also when imported from elsewhere

from dropdoc_mixin import outputs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a shipped file is out of date")
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write to (default: monitoring/)")
    parser.add_argument("--runbook-base", default="",
                        help="URL prefix of the repository for runbook_url (default: relative docs/runbook.md)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in outputs(args.runbook_base).items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)} - run python monitoring/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
