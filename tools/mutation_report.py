"""Summarise the last ``mutmut run`` (``make mutate``) as Markdown: score, modules, survivors.

Reads what mutmut recorded through its own command line (``mutmut results --all true`` and
``mutmut show``), so it follows mutmut's statuses exactly. Survivors whose change cannot alter
any behaviour (equivalent mutants) are named in ``EQUIVALENT`` with the reason; every other
survivor is listed as a gap in the tests.
"""

from __future__ import annotations

import collections
import datetime
import importlib.metadata
import re
import subprocess
import sys

#: Mutant name (or prefix) -> why the mutation changes no behaviour.
EQUIVALENT: dict[str, str] = {}

_LINE = re.compile(r"^\s+(?P<name>\S+): (?P<status>.+)$")


def mutmut(*args: str) -> str:
    command = [sys.executable, "-m", "mutmut", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)  # noqa: S603
    return done.stdout


def changed_line(name: str) -> str:
    diff = mutmut("show", name).splitlines()
    added = [
        line[1:].strip() for line in diff if line.startswith("+") and not line.startswith("+++")
    ]
    return added[0] if added else "?"


def main() -> int:
    statuses: dict[str, str] = {}
    for line in mutmut("results", "--all", "true").splitlines():
        match = _LINE.match(line)
        if match:
            statuses[match["name"]] = match["status"].strip()
    counts = collections.Counter(statuses.values())
    equivalent = {
        name: reason
        for name, status in statuses.items()
        if status == "survived"
        for prefix, reason in EQUIVALENT.items()
        if name.startswith(prefix)
    }
    checked = {n: s for n, s in statuses.items() if s != "not checked" and n not in equivalent}
    killed = sum(1 for s in checked.values() if s in ("killed", "timeout", "caught by type check"))
    score = killed / len(checked) if checked else 0.0
    version = importlib.metadata.version("mutmut")
    print(f"# Mutation score: {score:.1%}\n")
    print(f"mutmut {version}, {datetime.date.today().isoformat()}.\n")
    print(
        f"{killed} of {len(checked)} non-equivalent mutants killed; "
        f"{len(equivalent)} equivalent; "
        + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        + ".\n"
    )
    print("| module | mutants | killed | survived | no tests | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    by_module: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for name, status in checked.items():
        by_module[name.split(".x")[0]][status] += 1
    for module, module_counts in sorted(by_module.items()):
        total = sum(module_counts.values())
        dead = module_counts["killed"] + module_counts["timeout"]
        print(
            f"| `{module}` | {total} | {dead} | {module_counts['survived']} | "
            f"{module_counts['no tests']} | {dead / total:.0%} |"
        )
    survivors = [n for n, s in checked.items() if s in ("survived", "no tests")]
    print(f"\n## Survivors ({len(survivors)})\n")
    for name in survivors:
        print(f"- `{name}` ({checked[name]}): `{changed_line(name)}`")
    if equivalent:
        print(f"\n## Equivalent ({len(equivalent)})\n")
        for name, reason in equivalent.items():
            print(f"- `{name}`: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
