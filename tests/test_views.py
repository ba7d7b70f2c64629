"""The status page: staff only, HTML and JSON, never fetches unless asked."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

import tradevest_django
from tradevest_django.testing import FakeTradevestServer, Fault

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client: Client) -> Client:
    client.force_login(User.objects.create_user("ops", is_staff=True))
    return client


def test_staff_only(client: Client, tradevest_settings: FakeTradevestServer) -> None:
    assert client.get("/tradevest/").status_code == 302  # to the login page
    client.force_login(User.objects.create_user("someone"))
    assert client.get("/tradevest/?format=json").status_code == 302
    assert tradevest_settings.token_request_count == 0


def test_showing_never_fetches_a_token(
    staff_client: Client, tradevest_settings: FakeTradevestServer
) -> None:
    data = staff_client.get("/tradevest/?format=json").json()
    (alias,) = data["aliases"]
    assert alias["alias"] == "default"
    assert alias["token_cached"] is False
    assert alias["client_id"] == "test…nt"
    assert tradevest_settings.token_request_count == 0
    html = staff_client.get("/tradevest/").content.decode()
    assert "Tradevest status" in html
    assert tradevest_settings.token_request_count == 0


def test_shows_the_cached_token_and_last_refresh(
    staff_client: Client, tradevest_settings: FakeTradevestServer
) -> None:
    token = tradevest_django.get_token()
    data = staff_client.get("/tradevest/", HTTP_ACCEPT="application/json").json()
    (alias,) = data["aliases"]
    assert alias["token_cached"] is True
    assert alias["fingerprint"] == token.fingerprint
    assert 3500 < alias["expires_in"] <= 3600
    assert alias["last_refresh"]
    body = staff_client.get("/tradevest/").content.decode() + str(data)
    assert token.access_token not in body
    assert tradevest_settings.client_secret not in body


def test_check_fetches_and_reports_errors(
    staff_client: Client, tradevest_settings: FakeTradevestServer
) -> None:
    tradevest_settings.inject(Fault.error("invalid_client"))
    data = staff_client.post("/tradevest/?format=json").json()
    (alias,) = data["aliases"]
    assert alias["check"]["ok"] is False
    assert alias["check"]["error"] == "InvalidClient"
    assert alias["last_error"]["type"] == "InvalidClient"
    assert tradevest_settings.token_request_count == 1
    tradevest_settings.clear_faults()
    html = staff_client.post("/tradevest/").content.decode()  # the button
    assert "InvalidClient" in html  # the remembered failure, not a new request
    assert tradevest_settings.token_request_count == 1


@pytest.mark.parametrize("csrf_middleware", [True, False], ids=["with", "without"])
def test_only_a_csrf_protected_post_checks(
    settings: object, tradevest_settings: FakeTradevestServer, csrf_middleware: bool
) -> None:
    if not csrf_middleware:  # the view protects itself, whatever the project's middleware
        settings.MIDDLEWARE = [  # type: ignore[attr-defined]
            m
            for m in settings.MIDDLEWARE
            if "Csrf" not in m  # type: ignore[attr-defined]
        ]
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_user("ops", is_staff=True))
    # An <img src=".../?check=1"> on any page a staff member opens: no token request.
    assert client.get("/tradevest/?check=1&format=json").json()["checked"] is False
    # A cross-site form: refused.
    assert client.post("/tradevest/").status_code == 403
    assert tradevest_settings.token_request_count == 0
    # The page's own button: its form carries the CSRF token.
    page = client.get("/tradevest/")
    token = page.context["csrf_token"]
    assert f'value="{token}"' in page.content.decode()
    response = client.post("/tradevest/?format=json", {"csrfmiddlewaretoken": token})
    assert response.json()["checked"] is True
    assert tradevest_settings.token_request_count == 1


def test_a_fallback_secret_in_use_shows_on_the_page(
    settings: object, staff_client: Client, tradevest_settings: FakeTradevestServer
) -> None:
    settings.TRADEVEST = {  # type: ignore[attr-defined]
        "default": tradevest_settings.settings(
            CLIENT_SECRET="views-secret-NEXT-k1", CLIENT_SECRET_FALLBACKS=["test-secret"]
        )
    }
    tradevest_django.get_token()
    data = staff_client.get("/tradevest/?format=json").json()
    assert data["aliases"][0]["secret"] == "CLIENT_SECRET_FALLBACKS[0]"
    html = staff_client.get("/tradevest/").content.decode()
    assert "with CLIENT_SECRET_FALLBACKS[0]" in html
    assert "views-secret-NEXT-k1" not in html + str(data)


def test_a_permission_setting_opens_the_page_to_others(
    settings: object, client: Client, tradevest_settings: FakeTradevestServer
) -> None:
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    settings.TRADEVEST_STATUS_PERMISSION = "auth.view_status_page"  # type: ignore[attr-defined]
    user = User.objects.create_user("monitoring")
    client.force_login(user)
    assert client.get("/tradevest/?format=json").status_code == 302  # not staff, no permission
    kind = ContentType.objects.get_for_model(User)
    user.user_permissions.add(
        Permission.objects.create(codename="view_status_page", name="status", content_type=kind)
    )
    client.force_login(User.objects.get(pk=user.pk))  # a fresh user: no cached permissions
    assert client.get("/tradevest/?format=json").status_code == 200
    staff = User.objects.create_user("staff-without-it", is_staff=True)
    client.force_login(staff)
    assert client.get("/tradevest/?format=json").status_code == 302  # the setting replaces staff


def test_a_resolved_error_is_shown_as_resolved(
    staff_client: Client, tradevest_settings: FakeTradevestServer
) -> None:
    tradevest_settings.inject(Fault.error("invalid_client", description="x" * 300))
    staff_client.post("/tradevest/")  # the check fails: a red last error
    html = staff_client.get("/tradevest/").content.decode()
    assert '<span class="bad">InvalidClient</span>' in html
    assert "Resolved by" not in html
    manager = tradevest_django.get_manager()
    manager.refresh()  # a later refresh succeeds
    html = staff_client.get("/tradevest/").content.decode()
    assert "InvalidClient, resolved" in html and "Resolved by the refresh at" in html
    assert '<span class="bad">InvalidClient</span>' not in html
    assert " UTC" in html and " ago" in html and "in 59 min" in html
