"""docs/quickstart.md works when pasted into a project that ``django-admin startproject`` made."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tradevest_django.testing import FakeTradevestServer
from tradevest_django.testing.__main__ import env_lines

QUICKSTART = Path(__file__).resolve().parent.parent / "docs" / "quickstart.md"


def block(first_line: str) -> str:
    """The fenced code block of the quickstart whose first line is ``first_line``."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", QUICKSTART.read_text(), re.MULTILINE | re.DOTALL)
    (found,) = [text for text in blocks if text.startswith(first_line + "\n")]
    return str(found)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name != "DJANGO_SETTINGS_MODULE" and not name.startswith("TRADEVEST_")
    }
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_settings_snippet_fits_a_startproject_settings_file() -> None:
    settings = block("# settings.py, at the end")
    assert "BASE_DIR =" not in settings and "from pathlib" not in settings  # startproject's
    assert QUICKSTART.read_text().count("CACHES = ") == 1
    assert 'env("REDIS_URL"' in settings
    assert re.search(r"^REDIS_URL=redis://", block("# .env"), re.MULTILINE)


@pytest.mark.slow
def test_pasted_into_a_new_project_check_warns_about_placeholders_until_the_fake_is_used(
    tmp_path: Path,
) -> None:
    result = run("-m", "django", "startproject", "mysite", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    settings = tmp_path / "mysite" / "settings.py"
    # "Add the app"
    text = settings.read_text().replace(
        "INSTALLED_APPS = [\n", "INSTALLED_APPS = [\n    'tradevest_django',\n"
    )
    assert "'tradevest_django'" in text
    settings.write_text(text + "\n" + block("# settings.py, at the end"))

    (tmp_path / ".env").write_text(block("# .env"))
    result = run("manage.py", "check", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("(tradevest_django.W007)") == 2, output
    assert "<your client" not in output

    # "Develop without credentials": the fake's four lines in place of the id and secret.
    kept = [line for line in block("# .env").splitlines() if "<your client" not in line]
    (tmp_path / ".env").write_text("\n".join([*kept, *env_lines(FakeTradevestServer(port=8765))]))
    result = run("manage.py", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
