"""Run the test suite against each supported Django LTS: ``nox`` (or ``make test-django42``)."""

from __future__ import annotations

import nox

nox.options.reuse_existing_virtualenvs = True


@nox.session
@nox.parametrize("django", ["4.2", "5.2"])
def tests(session: nox.Session, django: str) -> None:
    session.install("-e", ".[test]", f"django~={django}.0")
    session.run("python", "-m", "pytest", *session.posargs)
