"""Headless Chromium on the example project's status page and on the built documentation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tradevest_django.testing import FakeTradevestServer, Fault

pytestmark = [pytest.mark.slow, pytest.mark.browser]
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(what: str) -> None:
    message = f"needs {what} (Debian's chromium package and the playwright Python package)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required under CI=true: {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        _missing("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def example_site(tmp_path: Path) -> Iterator[tuple[str, str, FakeTradevestServer]]:
    """The example project on runserver against a fake Tradevest: (url, staff password, fake)."""
    project = ROOT / "example_project"
    with FakeTradevestServer(client_id="browser-client", client_secret="browser-secret-ZQ") as fake:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "example_project.settings",
            "TRADEVEST_CLIENT_ID": fake.client_id,
            "TRADEVEST_CLIENT_SECRET": fake.client_secret,
            "TRADEVEST_AUTH_URL": fake.auth_url,
            "TRADEVEST_API_URL": fake.api_url,
            "TRADEVEST_FAILURE_COOLDOWN": "0",  # a refusal is asked about again at once
            "DATABASE_URL": f"sqlite:///{tmp_path}/site.sqlite3",
            "CACHE_URL": f"filecache://{tmp_path}/cache",
            "DJANGO_SILENCED_SYSTEM_CHECKS": "tradevest_django.W003",
            "CELERY_BROKER_URL": "",
        }
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=project, env=env, check=True, timeout=120)
        password = (
            subprocess.run(
                [*manage, "shell", "-c", STAFF_USER],
                cwd=project,
                env=env,
                check=True,
                timeout=60,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )  # Django 5.2's shell may print a line first
        port = free_port()
        log = (tmp_path / "runserver.log").open("wb")
        server = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url + "/tradevest/", server, tmp_path / "runserver.log")
            yield url, password, fake
        finally:
            server.terminate()
            server.wait(timeout=20)
            log.close()


STAFF_USER = """
import secrets
from django.contrib.auth import get_user_model
password = secrets.token_urlsafe(16)
get_user_model().objects.create_user("ops", password=password, is_staff=True)
print(password)
"""


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - a loopback URL we built
        except urllib.error.HTTPError:
            return  # it answers (a redirect to the login page counts)
        except OSError:
            time.sleep(0.2)  # polling a starting server, bounded by the deadline
        else:
            return
    pytest.fail(f"runserver did not answer within 60 s:\n{log.read_text()}")


def test_status_page_shows_aliases_and_checks_on_request(
    browser: Any, example_site: tuple[str, str, FakeTradevestServer]
) -> None:
    url, password, fake = example_site
    context = browser.new_context(viewport={"width": 1280, "height": 520})
    page = context.new_page()
    page.goto(url + "/tradevest/")  # staff only: redirected to the admin's login form
    assert "/login/" in page.url
    page.fill("#id_username", "ops")
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(url + "/tradevest/")
    assert page.title() == "Tradevest status"
    row = page.locator("tbody tr").first.inner_text()
    assert "default" in row
    assert "brow…nt" in row
    assert fake.token_request_count == 0  # showing the page never fetches
    long_words = " ".join(["the credentials of this client were refused"] * 8)
    fake.inject(Fault.error("invalid_client", description=long_words))
    page.get_by_role("button", name="Check now").click()
    page.wait_for_load_state()
    assert "InvalidClient" in page.locator("tbody tr.alias").first.inner_text()
    assert long_words[:60] in page.locator("tbody tr.detail").first.inner_text()
    # the long message wraps in its own row: the columns stay within the 1280 px window
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.get_by_role("button", name="Check now").click()
    page.wait_for_load_state()
    row = page.locator("tbody tr.alias").first.inner_text()
    assert "token OK" in row and "InvalidClient, resolved" in row
    assert "Resolved by the refresh at" in page.locator("tbody tr.detail").first.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert fake.token_request_count == 2
    html = page.content()
    assert fake.client_secret not in html
    assert all(token not in html for token in fake.issued_tokens)
    target = ROOT / ("docs" if os.environ.get("TRADEVEST_UPDATE_SCREENSHOT") else "build")
    target.mkdir(exist_ok=True)
    page.screenshot(path=str(target / "status-page.png"), full_page=True)
    context.close()


def test_built_docs_index(browser: Any, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=ROOT,
        check=True,
        timeout=180,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    page = browser.new_page()
    page.goto((site / "index.html").as_uri())
    assert "tradevest-django" in page.title()
    nav = page.locator("nav.md-nav--primary").first.text_content() or ""
    for entry in ("Quickstart", "Configuration", "Celery", "Testing"):
        assert entry in nav
    page.close()
