"""Run the test suite on the oldest and newest supported combinations: ``nox``.

``make test`` runs the newest (Django 5.2 LTS) in ``.venv``; ``make test-django42`` runs the
oldest: Django 4.2 LTS on Python 3.10.
"""

from __future__ import annotations

import glob
import os

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _python310() -> str:
    """Python 3.10: pyenv's own binary where pyenv has one (its shim refuses versions that are
    installed but not selected), otherwise whatever ``python3.10`` nox finds."""
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python3.10")))
    return found[-1] if found else "3.10"


@nox.session(python=_python310())
def django42(session: nox.Session) -> None:
    """Django 4.2 LTS on Python 3.10, the oldest supported pair."""
    session.install("-e", ".[test]", "django~=4.2.0")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def django52(session: nox.Session) -> None:
    """Django 5.2 LTS on the interpreter nox runs with."""
    session.install("-e", ".[test]", "django~=5.2.0")
    session.run("python", "-m", "pytest", *session.posargs)
