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

_HEADER_CASE = (
    "Header names are looked up in a case-insensitive mapping (requests' "
    "`CaseInsensitiveDict`): any case finds the same header."
)
_M = "tradevest_django."

#: Mutant name (or prefix) -> why the mutation changes no behaviour. They leave the score.
EQUIVALENT: dict[str, str] = {
    **{
        f"{_M}{name}": _HEADER_CASE
        for name in (
            "endpoint.xǁTokenEndpointǁ_exchange__mutmut_23",
            "endpoint.xǁTokenEndpointǁ_exchange__mutmut_24",
            "endpoint.xǁTokenEndpointǁ_exchange__mutmut_38",
            "endpoint.xǁTokenEndpointǁ_exchange__mutmut_39",
            "sessions.xǁTradevestAuthǁ_on_response__mutmut_27",
            "sessions.xǁTradevestAuthǁ_on_response__mutmut_28",
            "sessions.xǁTradevestAuthǁ_on_response__mutmut_50",
            "sessions.xǁTradevestAuthǁ_on_response__mutmut_51",
            "sessions.xǁTradevestAuthǁ_on_response__mutmut_64",
            "sessions.xǁTradevestAuthǁ_on_response__mutmut_65",
            "sessions.xǁTradevestAuthǁ_reject__mutmut_9",
            "sessions.xǁTradevestAuthǁ_reject__mutmut_10",
        )
    },
    **{
        f"{_M}sessions.xǁ_Retryǁincrement__mutmut_{number}": (
            "Changes an argument of the `MaxRetryError` raised for a `Retry-After` longer than "
            "the session waits. urllib3's `urlopen()` catches that error and returns the "
            "response (the session's `Retry` has `raise_on_status=False`), so no caller ever "
            "sees the error or its arguments."
        )
        for number in (8, 9, 12, 13, 14, 15, 16, 17, 18)
    },
    f"{_M}endpoint.x__json__mutmut_4": "Codec names are case-insensitive: `UTF-8` is `utf-8`.",
    f"{_M}endpoint.xǁTokenEndpointǁ_post__mutmut_29": (
        "requests treats `verify=None` as `True` (the session's default, or the CA bundle of "
        "`REQUESTS_CA_BUNDLE`), exactly as it treats `verify=True`."
    ),
    f"{_M}endpoint.xǁTokenEndpointǁ_post__mutmut_36": (
        "Without `verify`, requests uses `None`, which it treats as `True` (see above)."
    ),
    f"{_M}endpoint.xǁTokenEndpointǁ_post__mutmut_49": (
        "The chunk size of the read: the body is checked against MAX_BODY after every chunk "
        "and in full at the end, so any size gives the same outcome."
    ),
    f"{_M}endpoint.xǁTokenEndpointǁ_interpret__mutmut_25": (
        "An empty body and `XXXX` are both not JSON: `_json()` returns the same marker for both."
    ),
    f"{_M}endpoint.x_clock_skew__mutmut_21": (
        "Reached only when the skew range, widened by SKEW_TOLERANCE (2 s), excludes zero: then "
        "`low` is either above 2 or below 0, never 0."
    ),
    f"{_M}endpoint.x_clock_skew__mutmut_22": (
        "Reached only when `low` is above 2 s or below 0 (see above): `> 1` and `> 0` agree."
    ),
    f"{_M}sessions.xǁTradevestSessionǁ_mount_adapters__mutmut_17": (
        "Drops `allowed_methods=Retry.DEFAULT_ALLOWED_METHODS`, which is urllib3's default."
    ),
    f"{_M}sessions.xǁTradevestSessionǁ_mount_adapters__mutmut_20": (
        "Drops `respect_retry_after_header=True`, which is urllib3's default."
    ),
    f"{_M}sessions.xǁTradevestSessionǁapi_url__mutmut_3": (
        "Looks at 9 characters instead of 8 before testing for `https://` or `http://` "
        "(at most 8 characters): the answer is the same."
    ),
    f"{_M}sessions.xǁTradevestAuthǁ_on_response__mutmut_68": (
        "The default of the replay marker's `getattr`: `None` and `False` are both false."
    ),
    f"{_M}apihost.x_validated_requestor_id__mutmut_3": (
        "Parses a `uuid.UUID` again from its own string instead of taking it as it is: the "
        "same canonical string either way."
    ),
    f"{_M}manager.xǁTokenManagerǁobserve_in_flight__mutmut_16": (
        "`excess > lead` becomes `>=`: they differ only when `excess == lead`, where the other "
        "branch's `max(excess, lead * 0.99, 0.0)` also keeps `lead`."
    ),
    f"{_M}manager.xǁTokenManagerǁobserve_in_flight__mutmut_24": (
        "Drops the `0.0` floor: that branch runs only with a positive lead, so `lead * 0.99` "
        "is already above 0."
    ),
    f"{_M}manager.xǁTokenManagerǁ_next_step__mutmut_1": (
        "The default `waiting=False` becomes `True`: it only turns `TakeLock` into `NothingYet` "
        "while the lock is held, and the callers that use the default treat both alike."
    ),
    f"{_M}rotation.xǁSecretRotationǁeach__mutmut_5": (
        "The initial `refused_until` is never read: it is compared only once `refused` is set, "
        "and both are assigned together."
    ),
    f"{_M}shared.xǁSharedStateǁ_describe_cache__mutmut_8": (
        "Drops the default of `getattr(settings, 'CACHES', None)`: Django's settings always "
        "define CACHES (its global default), so the default is never used."
    ),
}

#: Mutant name -> why no test kills it although it changes something. They count as survivors.
ACCEPTED: dict[str, str] = {
    f"{_M}shared.x_best_effort__mutmut_2": (
        "The decorator factory runs when the module is imported, before mutmut switches a "
        "mutant on, so the mutated line never runs under the tool. Applied for real, it would "
        "turn every cache method into `None` and fail the whole suite."
    ),
}

#: The statuses that count as caught.
CAUGHT = ("killed", "timeout", "caught by type check")

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


def reason_for(name: str, reasons: dict[str, str]) -> str | None:
    return next((why for prefix, why in reasons.items() if name.startswith(prefix)), None)


def main() -> int:
    statuses: dict[str, str] = {}
    for line in mutmut("results", "--all", "true").splitlines():
        match = _LINE.match(line)
        if match:
            statuses[match["name"]] = match["status"].strip()
    if not statuses:
        print("No mutmut results: run `make mutate` first.", file=sys.stderr)
        return 1
    counts = collections.Counter(statuses.values())
    equivalent = {
        name: why
        for name, status in statuses.items()
        if status not in CAUGHT and (why := reason_for(name, EQUIVALENT)) is not None
    }
    checked = {n: s for n, s in statuses.items() if s != "not checked" and n not in equivalent}
    killed = sum(1 for s in checked.values() if s in CAUGHT)
    score = killed / len(checked) if checked else 0.0
    version = importlib.metadata.version("mutmut")
    print(f"# Mutation score: {score:.2%}\n")
    print(f"mutmut {version}, {datetime.date.today().isoformat()}.\n")
    print(
        f"{killed} of {len(checked)} non-equivalent mutants caught; "
        f"{len(equivalent)} equivalent; "
        + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        + ".\n"
    )
    typed_total = counts["caught by type check"]
    by_tests = killed - typed_total
    print(
        f"Of the {len(checked) - typed_total} that mypy accepts, the tests kill {by_tests} "
        f"({by_tests / max(1, len(checked) - typed_total):.2%}).\n"
    )
    print("| module | mutants | killed by a test | caught by mypy | survived | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    by_module: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for name, status in checked.items():
        by_module[name.split(".x")[0]][status] += 1
    for module, module_counts in sorted(by_module.items()):
        total = sum(module_counts.values())
        tests = module_counts["killed"] + module_counts["timeout"]
        typed = module_counts["caught by type check"]
        print(
            f"| `{module}` | {total} | {tests} | {typed} | {total - tests - typed} | "
            f"{(tests + typed) / total:.0%} |"
        )
    survivors = [n for n, s in checked.items() if s not in CAUGHT]
    print(f"\n## Survivors ({len(survivors)})\n")
    for name in survivors:
        why = reason_for(name, ACCEPTED) or "no reason recorded"
        print(f"- `{name}` ({checked[name]}): `{changed_line(name)}`. {why}")
    if equivalent:
        print(f"\n## Equivalent ({len(equivalent)})\n")
        for name, why in equivalent.items():
            print(f"- `{name}`: `{changed_line(name)}`. {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
