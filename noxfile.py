"""Run the test suite on the two ends of the support matrix: ``nox``.

``make test-oldest`` runs Django 5.2 LTS on Python 3.10, ``make test-newest`` Django 6.1 on
Python 3.13 (and mypy against Django 6.1's stubs). ``make test`` runs the suite in ``.venv``.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _pyenv_python(version: str) -> str:
    """Python ``version`` (e.g. ``"3.10"``): pyenv's newest release of it where pyenv has one (its
    shim refuses versions that are installed but not selected), otherwise whatever
    ``python3.X`` nox finds."""
    release = re.compile(rf"{re.escape(version)}\.(\d+)")  # 3.13.2, not 3.13-dev or 3.13.2t
    found: dict[int, str] = {}
    for binary in glob.glob(
        os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")
    ):
        match = release.fullmatch(Path(binary).parents[1].name)
        if match:
            found[int(match[1])] = binary
    return found[max(found)] if found else version


@nox.session(python=_pyenv_python("3.10"))
def oldest(session: nox.Session) -> None:
    """Django 5.2 LTS on Python 3.10, the oldest supported pair."""
    session.install("-e", ".[test]", "django~=5.2.0")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=_pyenv_python("3.13"))
def newest(session: nox.Session) -> None:
    """Django 6.1 on Python 3.13, the newest supported pair; mypy checks against its stubs."""
    session.install("-e", ".[test]", "django~=6.1.0", "django-stubs~=6.1.0")
    session.run("mypy")
    session.run("python", "-m", "pytest", *session.posargs)
