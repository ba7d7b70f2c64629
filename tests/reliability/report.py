"""Render build/reliability-figures.json into the figures section of docs/reliability.md.

    python -m pytest            # any run that includes tests/reliability writes the JSON
    python -m tests.reliability.report --update docs/reliability.md

Only the part between the ``<!-- figures:start -->`` and ``<!-- figures:end -->`` markers is
replaced; the prose around it is kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.reliability.figures import FIGURES_PATH

START, END = "<!-- figures:start -->", "<!-- figures:end -->"
TITLES = {
    "endpoint_faults": "Token endpoint faults",
    "refresh_faults": "Faults during a refresh while the token is still valid",
    "backends": "Fleet per cache backend",
    "infrastructure": "Infrastructure faults",
}
COUNTERS = {
    "fault_kinds": "Fault kinds exercised (token endpoint)",
    "fault_kinds_survived": "…of which ended as documented",
    "bad_inputs_tried": "Bad inputs tried (property-based)",
    "concurrent_callers": "Most concurrent callers held at one token expiry",
    "token_requests_validated_against_openapi": "Token requests validated against the OpenAPI",
    "fake_answers_validated_against_openapi": "Fake server answers validated against the OpenAPI",
    "isolation_operations_checked": "Isolation checks (aliases, key prefixes)",
    "log_records_scanned": "Log records scanned for secrets (DEBUG, whole suite)",
    "exceptions_and_check_messages_scanned": "Exceptions and check messages scanned",
    "command_outputs_scanned": "Command outputs scanned",
    "secrets_and_tokens_watched": "Secrets and tokens watched for",
    "leaks_found": "Secrets or tokens leaked",
}


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    rows = sorted(rows, key=lambda row: str(row.get(columns[0])))  # tests run in random order
    headers = [column.replace("_", " ") for column in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def render(data: dict[str, Any]) -> str:
    """The Markdown of the figures section."""
    counters: dict[str, int] = data.get("counters", {})
    sections: dict[str, list[dict[str, Any]]] = data.get("sections", {})
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured by the test suite on {now}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}.",
        "",
        "| Figure | Value |",
        "|---|---|",
    ]
    for key, title in COUNTERS.items():
        if key in counters:
            lines.append(f"| {title} | {counters[key]:,} |")
    for key, rows in sections.items():
        lines += [
            "",
            f"### {TITLES.get(key, key.replace('_', ' ').capitalize())}",
            "",
            *_table(rows),
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", type=Path, help="the Markdown page to update in place")
    args = parser.parse_args(argv)
    data = json.loads(FIGURES_PATH.read_text())
    text = render(data)
    if args.update is None:
        print(text)
        return 0
    page = args.update.read_text()
    head, _, rest = page.partition(START)
    _, _, tail = rest.partition(END)
    args.update.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
