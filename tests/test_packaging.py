"""The distribution: sdist and wheel build, pass twine, install cleanly and carry what they must."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import tradevest_django

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
#: Tracked files that stay out of the sdist on purpose.
NOT_SHIPPED = (".ci/", ".gitignore")


def run(
    *args: object, cwd: Path = ROOT, env: dict[str, str] | None = None, merge_stderr: bool = False
) -> str:
    """The command's stdout (and its stderr when ``merge_stderr``); fails on a non-zero exit."""
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        timeout=600,
    )
    errors = result.stderr or ""
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{errors[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, the wheel, and the build's whole output (``"log"``)."""
    out = tmp_path_factory.mktemp("dist")
    log = run(
        sys.executable,
        "-m",
        "build",
        "--sdist",
        "--wheel",
        "--outdir",
        out,
        ROOT,
        merge_stderr=True,
    )
    (out / "build.log").write_text(log)
    version = tradevest_django.__version__
    return {
        "sdist": out / f"tradevest_django-{version}.tar.gz",
        "wheel": out / f"tradevest_django-{version}-py3-none-any.whl",
        "log": out / "build.log",
    }


def wheel_metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name).decode()


def test_twine_check_passes(dist: dict[str, Path]) -> None:
    run(sys.executable, "-m", "twine", "check", "--strict", dist["sdist"], dist["wheel"])


def test_sdist_ships_every_tracked_file(dist: dict[str, Path]) -> None:
    with tarfile.open(dist["sdist"]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    tracked = run("git", "ls-files").split()
    missing = [name for name in tracked if not name.startswith(NOT_SHIPPED) and name not in names]
    assert not missing, f"tracked but not in the sdist: {missing}"
    for required in (
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "docs/index.md",
        "tests/test_manager.py",
        "tradevest_django/py.typed",
        "tradevest_django/testing/openapi.json",
    ):
        assert required in names


def test_the_license_is_an_spdx_expression(dist: dict[str, Path]) -> None:
    """PEP 639 metadata, and so no deprecation warning about license classifiers."""
    assert "License classifiers are deprecated" not in dist["log"].read_text()
    metadata = wheel_metadata(dist["wheel"]).splitlines()
    assert "License-Expression: MIT" in metadata
    assert "License-File: LICENSE" in metadata
    assert not [line for line in metadata if line.startswith(("License:", "Classifier: License"))]
    with zipfile.ZipFile(dist["wheel"]) as archive:
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())


def test_wheel_carries_package_data_and_no_tests(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as archive:
        names = set(archive.namelist())
    assert "tradevest_django/py.typed" in names
    assert "tradevest_django/templates/tradevest_django/status.html" in names
    assert "tradevest_django/testing/server.py" in names
    assert "tradevest_django/testing/openapi.json" in names
    assert not any(name.startswith(("tests/", "example_project/", "bench/")) for name in names)
    text = wheel_metadata(dist["wheel"])
    assert "Requires-Dist: Django>=5.2" in text
    assert "Requires-Dist: requests>=2.31" in text
    assert "Requires-Dist: django-environ" in text


def test_wheel_installs_into_a_clean_venv_and_the_example_passes_check(
    dist: dict[str, Path], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", dist["wheel"], "celery")
    project = tmp_path / "example_project"
    shutil.copytree(ROOT / "example_project", project)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "TRADEVEST_CLIENT_ID": "packaging-client",
        "TRADEVEST_CLIENT_SECRET": "packaging-secret",
        "TRADEVEST_ENVIRONMENT": "test",
        "DJANGO_SILENCED_SYSTEM_CHECKS": "tradevest_django.W001",
    }
    where = run(
        python, "-c", "import tradevest_django; print(tradevest_django.__file__)", cwd=tmp_path
    )
    assert str(venv) in where  # the installed wheel, not the checkout
    contract = run(
        python,
        "-c",
        "import json; from tradevest_django.testing import openapi_path; "
        "print(json.loads(openapi_path().read_text())['paths'])",
        cwd=tmp_path,
    )
    assert "/oauth2/token" in contract  # users' suites find the contract in the installed package
    output = run(python, "manage.py", "check", cwd=project, env=env)
    assert "no issues" in output
