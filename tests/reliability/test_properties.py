"""Property-based tests: no input ends in anything but a token, a config or a documented error.

* the token-response parser (``parse_token_response``) with arbitrary JSON-like values;
* whole answers of the token endpoint (any status, any body up to the size limit) through
  ``TokenEndpoint.fetch()`` against the loopback fake server;
* the settings validation (``AliasConfig.from_dict``, ``validate_alias``, ``validate_setting``)
  with arbitrary dicts, including a secret pasted into the wrong key.

Every input tried is counted in the ``bad_inputs_tried`` figure.
"""

from __future__ import annotations

import base64
import json
import math
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import FakeClock
from tests.reliability import figures
from tradevest_django.conf import DEFAULTS, KNOWN_KEYS, AliasConfig, is_loopback
from tradevest_django.endpoint import (
    MAX_BODY,
    MAX_LIFETIME,
    FetchResult,
    TokenEndpoint,
    parse_token_response,
)
from tradevest_django.exceptions import (
    BadTokenResponse,
    TokenEndpointError,
    TradevestConfigurationError,
)
from tradevest_django.testing import FakeTradevestServer, Fault
from tradevest_django.tokens import Token
from tradevest_django.validation import Problem, validate_alias, validate_setting

ISSUED_AT = 1_800_000_000.0
#: ``database=None``: nothing is written into the work tree; each run explores afresh.
FAST = settings(max_examples=1000, deadline=None, database=None)
SLOW = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- JSON-like values ------------------------------------------------------------------------

#: Whatever Python's ``json.loads`` can return, which includes NaN and +/-Infinity.
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
#: Strings a careless server might send as a number: digits of any script, signs, spaces, huge.
numeric_strings = (
    st.integers(min_value=-(10**6), max_value=10**6).map(str)
    | st.floats(allow_nan=False).map(repr)
    | st.text(st.characters(categories=["Nd", "No", "Zs"]), min_size=1, max_size=6)
    | st.integers(min_value=4000, max_value=6000).map(lambda n: "9" * n)
    | st.builds(lambda n: f"  {n}\n", st.integers(min_value=0, max_value=10**5))
)
clean_tokens = st.text(string.ascii_letters + string.digits + "-._~+/=", min_size=1, max_size=40)
token_like = clean_tokens | st.text(max_size=40) | json_values
expires_like = st.integers() | st.floats() | numeric_strings | json_values
token_type_like = (
    st.sampled_from(["Bearer", "bearer", "BEARER", "mac", "", "Bearer "]) | json_values
)


good_answer_fields = {
    "access_token": clean_tokens,
    "expires_in": st.integers(min_value=1, max_value=10**7)
    | st.floats(min_value=1, max_value=1e7)
    | st.integers(min_value=1, max_value=10**6).map(str),
    "token_type": st.sampled_from(["Bearer", "bearer", "BEARER"]),
}


@st.composite
def token_answers(draw: st.DrawFn) -> tuple[object, bool]:
    """(answer, whether it is a good one): good answers with unknown members (RFC 6749 5.1: to
    be ignored), answers with fields of any type or missing, and any JSON value at all."""
    wildness = draw(st.sampled_from(["good", "mixed", "mixed", "any"]))
    if wildness == "any":
        return draw(json_values), False
    extra = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3))
    if wildness == "good":
        return {**extra, **draw(st.fixed_dictionaries(good_answer_fields))}, True
    fields = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "access_token": token_like,
                "expires_in": expires_like,
                "token_type": token_type_like,
            },
        )
    )
    return {**extra, **fields}, False


def _twin(value: str) -> str:
    """``value`` with every ASCII letter and digit shifted by one within its kind."""

    def shift(ch: str) -> str:
        for first, size in (("a", 26), ("A", 26), ("0", 10)):
            offset = ord(ch) - ord(first)
            if 0 <= offset < size:
                return chr(ord(first) + (offset + 1) % size)
        return ch

    return "".join(shift(ch) for ch in value)


def _is_clean_token(value: str) -> bool:
    return bool(value) and all(0x21 <= ord(ch) <= 0x7E for ch in value)


@FAST
@given(token_answers())
def test_parser_returns_a_sane_token_or_bad_token_response(drawn: tuple[object, bool]) -> None:
    answer, good = drawn
    figures.count("bad_inputs_tried")
    figures.count("parser_inputs_tried")
    refusal: str | None = None
    try:
        token = parse_token_response(answer, issued_at=ISSUED_AT, alias="default")
    except BadTokenResponse as err:
        refusal = str(err)
    if refusal is not None:
        # Never echo what the server sent: a bad answer may still contain a real token. The
        # refusal must not depend on the token's value: a twin token (each letter and digit
        # shifted, so the same kind of string) must give the very same message. (A plain
        # "not in" would fail for tokens that happen to be words of the message itself.)
        access_token = answer.get("access_token") if isinstance(answer, dict) else None
        if isinstance(access_token, str) and isinstance(answer, dict):
            with pytest.raises(BadTokenResponse) as twin:
                parse_token_response(
                    {**answer, "access_token": _twin(access_token)},
                    issued_at=ISSUED_AT,
                    alias="default",
                )
            assert str(twin.value) == refusal
        assert not good, f"a good answer was refused: {refusal}"
        return
    figures.count("parser_tokens_accepted")
    assert isinstance(answer, dict)
    assert type(token) is Token
    assert type(token.lifetime) is int and 0 < token.lifetime <= MAX_LIFETIME
    assert _is_clean_token(token.access_token)
    assert token.access_token == answer["access_token"]
    assert token.token_type.lower() == "bearer"
    assert token.expires_at_timestamp == pytest.approx(ISSUED_AT + token.lifetime)
    if isinstance(answer.get("expires_in"), int) and not isinstance(answer["expires_in"], bool):
        assert token.lifetime == min(answer["expires_in"], MAX_LIFETIME)


# -- whole answers over HTTP -------------------------------------------------------------------


@pytest.fixture(scope="module")
def body_server() -> Iterator[FakeTradevestServer]:
    with FakeTradevestServer(client_secret="properties-secret-R2d") as server:
        yield server


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


bodies = (
    token_answers().map(lambda drawn: json.dumps(drawn[0]).encode())
    | st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | st.integers(min_value=1, max_value=MAX_BODY).map(_nested)  # both sides of the limit
)
statuses = st.sampled_from([200, 200, 200, 400, 401, 403, 404, 418, 429, 500, 503])


@SLOW
@given(status=statuses, body=bodies)
def test_any_answer_ends_in_a_token_or_a_documented_error(
    body_server: FakeTradevestServer, status: int, body: bytes
) -> None:
    figures.count("bad_inputs_tried")
    figures.count("endpoint_answers_tried")
    body_server.reset()
    body_server.inject(Fault.body(body, status=status))
    clock = FakeClock()
    config = AliasConfig.from_dict("default", body_server.settings(), check_cache=False)
    endpoint = TokenEndpoint(config, clock=clock, sleep=clock.sleep)
    result: FetchResult | BadTokenResponse | TokenEndpointError
    try:
        result = endpoint.fetch()
    except (BadTokenResponse, TokenEndpointError) as err:
        result = err
    if isinstance(result, BadTokenResponse):
        assert status == 200
    elif isinstance(result, TokenEndpointError):
        assert status not in (200, 429) and status < 500
        assert result.status_code == status
    elif status == 429 or status >= 500:  # retried: the next answer was a normal one
        assert result.attempts == 2
        assert result.token.access_token == body_server.issued_tokens[-1]
    else:
        assert status == 200 and result.attempts == 1
        assert _is_clean_token(result.token.access_token)
        assert 0 < result.token.lifetime <= MAX_LIFETIME
    assert body_server.token_request_count <= 2


# -- settings ----------------------------------------------------------------------------------

SECRET = "sk-properties-0f4e9a1c7b"
FERNET_KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()
urls = st.sampled_from(
    [
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
        "http://localhost",
        "https://b2b.auth.platform-test.tradevest.ai/",
        "http://b2b.auth.platform-test.tradevest.ai",
        "https://user:pw@example.com",
        "https://example.com/?q=1",
        "https://example.com/#f",
        "ftp://example.com",
        "http://[::1",
        "http://[not-an-ip]/",
        "https://",
        "//example.com",
        "",
    ]
) | st.text(max_size=30)
setting_values = (
    json_values
    | urls
    | st.sampled_from(["test", "pretest", "production", "prod", SECRET, "/oauth2/token"])
    | st.tuples(st.floats(), st.floats())
    | st.lists(st.text(max_size=10), max_size=3)
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.just(b"bytes")
)
junk_keys = st.text(max_size=12).filter(lambda key: key not in KNOWN_KEYS)
seconds = st.integers(min_value=1, max_value=120) | st.floats(min_value=0.1, max_value=120)
#: For each known key, valid values only.
VALID: dict[str, st.SearchStrategy[Any]] = {
    "CLIENT_ID": st.text(string.printable, min_size=1, max_size=12).filter(str.strip),
    "CLIENT_SECRET": st.just(SECRET),
    "ENVIRONMENT": st.sampled_from(["test", "pretest", "production"]),
    "AUTH_URL": st.sampled_from(["http://127.0.0.1:8000", "http://[::1]:1", "https://example.com"]),
    "API_URL": st.sampled_from(["http://localhost:9", "https://tvda-api.example.com/v1/"]),
    "TOKEN_PATH": st.sampled_from(["/oauth2/token", "/connect/token"]),
    "SCOPE": st.none() | st.just("tradevest.api") | st.just(["a", "b"]),
    "CACHE": st.just("default"),
    "TOKEN_TIMEOUT": seconds | st.tuples(seconds, seconds),
    "API_TIMEOUT": seconds | st.lists(seconds, min_size=2, max_size=2),
    "TOKEN_RETRIES": st.integers(min_value=0, max_value=10),
    "API_RETRIES": st.integers(min_value=0, max_value=10),
    "TOKEN_DEADLINE": seconds,
    "EXPIRY_MARGIN": seconds | st.just(0),
    "REFRESH_WINDOW": st.floats(min_value=0, max_value=0.5),
    "REFRESH_WINDOW_MAX": seconds,
    "LOCK_TIMEOUT": st.integers(min_value=1, max_value=30),
    "FAILURE_COOLDOWN": st.integers(min_value=0, max_value=60),
    "ENCRYPTION_KEYS": st.none() | st.just([FERNET_KEY]) | st.just([FERNET_KEY.encode()]),
    "CLIENT_SECRET_FALLBACKS": st.just([]) | st.just([SECRET + "-old"]) | st.just((SECRET,)),
    "PRIMARY_SECRET_RETRY": st.integers(min_value=10, max_value=86400),
}
assert set(VALID) == KNOWN_KEYS
#: Values just outside the valid ranges, of the right type.
EDGE = (
    st.sampled_from(["", " ", "prod", "oauth2/token", "not-a-key", SECRET])
    | st.integers(min_value=-2, max_value=0)
    | st.sampled_from([-0.5, 0.0, 0.6, 1e-9, float("inf"), float("-inf"), float("nan")])
    | st.lists(st.integers(min_value=0, max_value=3), max_size=3)
    | urls
)


@st.composite
def alias_options(draw: st.DrawFn) -> dict[Any, Any]:
    """Usable aliases, then aliases with values just out of range, then values of any type under
    any key; always some of each."""
    wildness = draw(st.sampled_from(["valid", "edge", "wild"]))
    values = {
        key: valid
        if wildness == "valid"
        else valid | EDGE
        if wildness == "edge"
        else valid | EDGE | setting_values
        for key, valid in VALID.items()
    }
    options = draw(st.fixed_dictionaries({}, optional=values))
    if draw(st.booleans()):  # the required keys, usually present
        options = {
            "CLIENT_ID": "client-1",
            "CLIENT_SECRET": SECRET,
            "AUTH_URL": "http://127.0.0.1:1",
            **options,
        }
    if wildness == "wild":
        options.update(draw(st.dictionaries(junk_keys, setting_values, max_size=2)))
    return options


def _assert_no_secret(texts: list[str], options: dict[Any, Any]) -> None:
    if options.get("CLIENT_SECRET") == SECRET:
        leaked = [text for text in texts if SECRET in text]
        assert not leaked, f"a configuration message shows the client secret: {leaked[0]!r}"


def _assert_sane(config: AliasConfig) -> None:
    for url in (config.auth_url, config.api_url):
        if url is not None:  # TLS, or plain http only to loopback
            parts = urlsplit(url)
            assert parts.scheme == "https" or (
                parts.scheme == "http" and is_loopback(parts.hostname)
            )
    for pair in (config.token_timeout, config.api_timeout):
        assert len(pair) == 2 and all(math.isfinite(v) and v > 0 for v in pair)
    assert math.isfinite(config.token_deadline) and config.token_deadline >= 0.1
    assert 0 <= config.refresh_window <= 0.5
    assert isinstance(config.token_retries, int) and config.token_retries >= 0
    assert isinstance(config.lock_timeout, int) and config.lock_timeout >= 1


@FAST
@given(alias_options())
def test_alias_options_give_a_config_or_a_configuration_error(options: dict[Any, Any]) -> None:
    figures.count("bad_inputs_tried")
    figures.count("settings_inputs_tried")
    problems = validate_alias("default", options, check_cache=False)
    assert all(type(problem) is Problem for problem in problems)
    _assert_no_secret([f"{p.msg} {p.hint}" for p in problems], options)
    refusal: TradevestConfigurationError | None = None
    try:
        config = AliasConfig.from_dict("default", options, check_cache=False)
    except TradevestConfigurationError as err:
        refusal = err
    if refusal is not None:
        assert problems, "from_dict raised although validate_alias found nothing"
        assert str(refusal) == f"{problems[0].msg} {problems[0].hint}"
        assert isinstance(refusal, ImproperlyConfigured)
        return
    figures.count("settings_configs_accepted")
    assert not problems
    assert set(options) <= KNOWN_KEYS
    assert config.client_secret == options["CLIENT_SECRET"]
    if not any(SECRET in repr(v) for k, v in options.items() if k != "CLIENT_SECRET"):
        assert SECRET not in repr(config)
    _assert_sane(config)


usable_aliases = st.fixed_dictionaries(
    {key: VALID[key] for key in ("CLIENT_ID", "CLIENT_SECRET", "AUTH_URL")},
    optional={key: VALID[key] for key in KNOWN_KEYS - {"CLIENT_ID", "CLIENT_SECRET", "AUTH_URL"}},
)


@settings(max_examples=300, deadline=None, database=None)
@given(usable_aliases)
def test_usable_aliases_are_accepted_as_given(options: dict[str, Any]) -> None:
    """The other side of the property: validation refuses nothing that is documented as valid."""
    figures.count("settings_inputs_tried")
    config = AliasConfig.from_dict("default", options, check_cache=False)
    _assert_sane(config)
    values = {**DEFAULTS, **options}
    assert config.token_retries == values["TOKEN_RETRIES"]
    assert config.lock_timeout == values["LOCK_TIMEOUT"]
    assert config.token_deadline == float(values["TOKEN_DEADLINE"])
    assert config.token_path == values["TOKEN_PATH"]
    assert config.auth_url == options["AUTH_URL"].rstrip("/")


@settings(max_examples=800, deadline=None, database=None)
@given(
    st.dictionaries(st.text(max_size=8) | st.integers(), alias_options() | json_values, max_size=3)
    | json_values
)
def test_whole_setting_gives_problems_never_an_exception(value: object) -> None:
    figures.count("bad_inputs_tried")
    figures.count("settings_inputs_tried")
    problems = validate_setting(value)
    assert isinstance(problems, list)
    assert all(type(problem) is Problem for problem in problems)
    assert all(problem.check_id.startswith("tradevest_django.E") for problem in problems)
    if not isinstance(value, dict) or not value:
        assert [p.check_id for p in problems] == ["tradevest_django.E001"]
    for problem in problems:
        assert isinstance(problem.error(), TradevestConfigurationError)
        assert (
            problem.key is None
            or problem.key in KNOWN_KEYS
            or problem.check_id == "tradevest_django.E007"
        )


def test_defaults_are_themselves_valid() -> None:
    """Every documented default passes the validation it would be subject to if given."""
    options = {**DEFAULTS, "CLIENT_ID": "c", "CLIENT_SECRET": SECRET, "ENVIRONMENT": "test"}
    assert validate_alias("default", options, check_cache=False) == []


# -- inputs the properties above have found; each stays here as a named case ------------------

KNOWN_ANSWERS: list[tuple[str, dict[str, object]]] = [
    ("expires_in -Infinity", {"access_token": "abc", "expires_in": float("-inf")}),
    ("expires_in U+00B2", {"access_token": "abc", "expires_in": "\u00b2"}),
    ("expires_in 4301 digits", {"access_token": "abc", "expires_in": "9" * 4301}),
]


@pytest.mark.parametrize(("name", "answer"), KNOWN_ANSWERS, ids=[n for n, _ in KNOWN_ANSWERS])
def test_parser_known_inputs(name: str, answer: dict[str, object]) -> None:
    figures.count("bad_inputs_tried")
    with pytest.raises(BadTokenResponse):
        parse_token_response(answer, issued_at=ISSUED_AT)


_VALID = {"CLIENT_ID": "client-1", "CLIENT_SECRET": SECRET, "AUTH_URL": "http://127.0.0.1:1"}
KNOWN_OPTIONS: list[tuple[str, dict[str, object]]] = [
    ("ENVIRONMENT a list", {**_VALID, "ENVIRONMENT": []}),
    ("ENVIRONMENT a dict", {**_VALID, "ENVIRONMENT": {}}),
    ("AUTH_URL malformed IPv6", {**_VALID, "AUTH_URL": "http://[::1"}),
    ("API_URL malformed IPv6", {**_VALID, "API_URL": "http://[::1"}),
    ("TOKEN_DEADLINE 10**400", {**_VALID, "TOKEN_DEADLINE": 10**400}),
    ("TOKEN_TIMEOUT 10**400", {**_VALID, "TOKEN_TIMEOUT": 10**400}),
    ("EXPIRY_MARGIN 10**400", {**_VALID, "EXPIRY_MARGIN": 10**400}),
    ("REFRESH_WINDOW 10**400", {**_VALID, "REFRESH_WINDOW": 10**400}),
    ("ENVIRONMENT is the secret", {**_VALID, "ENVIRONMENT": SECRET}),
    ("API_TIMEOUT infinite", {**_VALID, "API_TIMEOUT": float("inf")}),
    ("TOKEN_DEADLINE infinite", {**_VALID, "TOKEN_DEADLINE": float("inf")}),
]


@pytest.mark.parametrize(("name", "options"), KNOWN_OPTIONS, ids=[n for n, _ in KNOWN_OPTIONS])
def test_settings_known_inputs(name: str, options: dict[str, object]) -> None:
    figures.count("bad_inputs_tried")
    with pytest.raises(TradevestConfigurationError) as info:
        AliasConfig.from_dict("default", options, check_cache=False)
    assert SECRET not in str(info.value)
    problems = validate_setting({"default": options})
    assert problems and all(SECRET not in f"{p.msg} {p.hint}" for p in problems)
