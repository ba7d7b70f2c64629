"""A tiny Django project for running ``manage.py`` as a real subprocess in the tests.

Its settings come from environment variables (see ``settings.py``), so a test points it at its
own fake server and cache directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

MANAGE = Path(__file__).resolve().parent / "manage.py"


def manage(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python tests/cmd_project/manage.py *args`` with ``env`` added to the environment."""
    environ = {**os.environ, **env}
    # pytest-django exports the test suite's settings; the subprocess must use its own.
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )
