"""The test suite's own guarantees: the leak scan catches leaks; Redis tests never skip in CI."""

from __future__ import annotations

import pytest

SCAN_TARGETS = {
    "a log record": "logging.getLogger('x').warning('token %s', server.issued_tokens[0])",
    "an exception message": "TradevestError(f'secret {server.client_secret}')",
    "a command's output": "OutputWrapper(io.StringIO()).write(server.client_secret)",
    "a check message": "checks.Warning(f'hint {server.client_secret}')",
}


@pytest.mark.parametrize("where", SCAN_TARGETS)
def test_the_suite_wide_scan_catches_a_leak(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The autouse scan in tests/conftest.py fails a test whose output contains a secret."""
    from pathlib import Path

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(
        f"""
        import io, logging
        import requests
        from django.core import checks
        from django.core.management.base import OutputWrapper
        from tradevest_django.exceptions import TradevestError
        from tradevest_django.testing import FakeTradevestServer

        def test_leaky():
            with FakeTradevestServer() as server:
                requests.post(server.token_url, data={{"grant_type": "client_credentials",
                    "client_id": server.client_id, "client_secret": server.client_secret}},
                    timeout=5)
                {SCAN_TARGETS[where]}
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--ds=tests.settings", timeout=60)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*a secret or token leaked into*"])


@pytest.mark.parametrize(("ci", "outcome"), [("true", {"errors": 1}), ("", {"skipped": 1})])
def test_redis_tests_fail_under_ci_and_skip_elsewhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: dict[str, int]
) -> None:
    """Without Redis, a test that needs it fails under CI=true and skips (saying how) elsewhere."""
    from pathlib import Path

    from tests.helpers import free_port

    closed = free_port()
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    monkeypatch.setenv("TRADEVEST_TEST_REDIS_URL", f"redis://127.0.0.1:{closed}/0")
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile("def test_needs_redis(redis_url):\n    assert redis_url\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "--ds=tests.settings", "-rs", timeout=60
    )
    result.assert_outcomes(**outcome)
    if not ci:
        result.stdout.fnmatch_lines(["*start redis-server or set TRADEVEST_TEST_REDIS_URL*"])
