"""Run the test suite on the oldest and newest supported combinations: ``nox``.

``make test`` runs the newest (Django 5.2 LTS) in ``.venv``; ``make test-django42`` runs the
oldest: Django 4.2 LTS on Python 3.10.
"""

from __future__ import annotations

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


@nox.session(python="3.10")
def django42(session: nox.Session) -> None:
    """Django 4.2 LTS on Python 3.10, the oldest supported pair."""
    session.install("-e", ".[test]", "django~=4.2.0")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def django52(session: nox.Session) -> None:
    """Django 5.2 LTS on the interpreter nox runs with."""
    session.install("-e", ".[test]", "django~=5.2.0")
    session.run("python", "-m", "pytest", *session.posargs)
