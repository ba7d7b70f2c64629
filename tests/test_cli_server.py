"""``python -m tradevest_django.testing``: the fake server from the command line.

The CLI runs as a real subprocess, the way a developer runs it. Its stdout carries the fake's
client secret on purpose (the ``.env`` lines to paste); the suite-wide leak scan only knows the
secrets of servers started in this process, so the tests here scan the subprocess's log lines
and this process's log records for the CLI's secret and token themselves.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import environ
import pytest
import requests
from django.core.cache.backends.locmem import LocMemCache

from tests.helpers import ServerFactory, stop_process
from tradevest_django import TokenManager
from tradevest_django.env import tradevest_env
from tradevest_django.testing import FakeTradevestServer, Fault
from tradevest_django.testing.__main__ import env_lines, main, parser
from tradevest_django.tokens import fingerprint

ROOT = Path(__file__).resolve().parent.parent
ENV_KEYS = [
    "TRADEVEST_AUTH_URL",
    "TRADEVEST_API_URL",
    "TRADEVEST_CLIENT_ID",
    "TRADEVEST_CLIENT_SECRET",
]
#: The CLI imports Django and requests in a loaded machine's subprocess: be patient, but bounded.
STARTUP = 60.0


class Cli:
    """A running ``python -m <module>``, its stdout and stderr read line by line as they come."""

    def __init__(self, module: str, *args: str, cwd: Path, sigint_ignored: bool = False) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("DJANGO_SETTINGS_MODULE", None)  # a pip user's shell has no settings module
        command = [sys.executable, "-m", module, *args]
        if sigint_ignored:
            # As a shell starts a background job (`... &` in a script): SIGINT ignored, which
            # exec keeps and Python then leaves alone (no KeyboardInterrupt).
            command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        assert self.process.stdout is not None and self.process.stderr is not None
        streams = [(self.process.stdout, self.stdout), (self.process.stderr, self.stderr)]
        self._readers = [
            threading.Thread(target=self._read, args=stream, daemon=True) for stream in streams
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise AssertionError(f"timed out; stdout {self.stdout!r}, stderr {self.stderr!r}")

    def env_lines(self) -> list[str]:
        """The ``KEY=VALUE`` lines it printed, once all four are there."""
        self.wait_for(lambda: len(self.settings()) == len(ENV_KEYS), STARTUP)
        return self.settings()

    def settings(self) -> list[str]:
        return [line for line in self.stdout if not line.startswith("#")]

    def stop(self, signum: int, timeout: float = 20.0) -> int:
        """Send ``signum``; return the exit status once the process and its output have ended."""
        self.process.send_signal(signum)
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def close(self) -> None:
        stop_process(self.process)
        for reader in self._readers:
            reader.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator[Callable[..., Cli]]:
    started: list[Cli] = []

    def run(
        *args: str, module: str = "tradevest_django.testing", sigint_ignored: bool = False
    ) -> Cli:
        cli = Cli(module, *args, cwd=tmp_path, sigint_ignored=sigint_ignored)
        started.append(cli)
        return cli

    yield run
    for cli in started:
        cli.close()


def test_a_token_from_the_printed_env_lines_one_log_line_per_request_and_sigterm_stops_it(
    run_cli: Callable[..., Cli],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    debug_log_records: list[logging.LogRecord],
) -> None:
    secret = f"cli-secret-{uuid.uuid4().hex}"
    options = ["--client-id", "cli-client", "--client-secret", secret]
    cli = run_cli("--port", "0", *options, "--expires-in", "120", "--latency", "200")
    printed = cli.env_lines()
    assert [line.partition("=")[0] for line in printed] == ENV_KEYS
    assert all(re.fullmatch(r"[A-Z_]+=\S+", line) for line in printed)

    # Pasted into a .env and read the way the quickstart's settings read it.
    (tmp_path / ".env").write_text("\n".join(cli.stdout) + "\n")
    monkeypatch.setattr(environ.Env, "ENVIRON", {})
    environ.Env.read_env(tmp_path / ".env")
    options = tradevest_env(environ.Env())
    assert options["CLIENT_SECRET"] == secret and options["CLIENT_ID"] == "cli-client"
    manager = TokenManager.from_options("default", options, cache=LocMemCache("cli", {}))
    started = time.monotonic()
    token = manager.get_token()
    assert time.monotonic() - started >= 0.2  # --latency 200
    assert token.lifetime == 120  # --expires-in 120
    api = options["API_URL"] + "/v1/prices"
    answer = requests.get(api, headers={"Authorization": token.authorization}, timeout=10)
    assert answer.status_code == 200
    assert requests.get(api, timeout=10).status_code == 401

    assert cli.stop(signal.SIGTERM) == 0
    logged = cli.stderr
    lines = [line.split(" ", 1)[1] for line in logged if re.match(r"\d\d:\d\d:\d\d ", line)]
    assert lines == [
        f"Fake Tradevest auth server and API on {options['AUTH_URL']} (token path "
        "/oauth2/token); Ctrl-C stops it.",
        f"token POST /oauth2/token -> 200 client_id=cli-client token={token.fingerprint} "
        "expires_in=120",
        f"api GET /v1/prices -> 200 client_id=cli-client token={token.fingerprint}",
        "api GET /v1/prices -> 401 (no token)",
        "Stopped.",
    ], logged
    # The secret is printed once, on stdout, as the .env line; nowhere else.
    texts = logged + [record.getMessage() for record in debug_log_records]
    assert not [text for text in texts if secret in text or token.access_token in text]
    assert [line for line in cli.stdout if secret in line] == [f"TRADEVEST_CLIENT_SECRET={secret}"]


def test_the_server_module_runs_it_too_and_ctrl_c_stops_it(run_cli: Callable[..., Cli]) -> None:
    cli = run_cli("--port", "0", module="tradevest_django.testing.server")
    assert [line.partition("=")[0] for line in cli.env_lines()] == ENV_KEYS
    cli.wait_for(lambda: any("Ctrl-C stops it" in line for line in cli.stderr))
    assert cli.stop(signal.SIGINT) == 0
    assert cli.stderr[-1].endswith(" Stopped.")


def test_sigint_stops_it_even_when_started_as_a_background_job(
    run_cli: Callable[..., Cli],
) -> None:
    cli = run_cli("--port", "0", sigint_ignored=True)
    cli.wait_for(lambda: any("Ctrl-C stops it" in line for line in cli.stderr))
    assert cli.stop(signal.SIGINT) == 0
    assert cli.stderr[-1].endswith(" Stopped.")


def test_a_busy_port_is_named_with_the_way_out(capsys: pytest.CaptureFixture[str]) -> None:
    handlers = [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"Cannot listen on 127.0.0.1:{port}" in err and "--port (0 picks a free one)" in err
    # Left as they were.
    assert [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)] == handlers


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--latency", "-1"], "expected 0 to 600000 milliseconds"),
        (["--latency", "soon"], "invalid _milliseconds value"),
        (["--expires-in", "0"], "expected a whole number of seconds from 1"),
        (["--port", "http"], "invalid int value"),
    ],
)
def test_bad_options_are_refused(
    args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert complaint in capsys.readouterr().err


def test_the_access_log_has_one_line_per_answer_and_no_secret(
    make_server: ServerFactory, debug_log_records: list[logging.LogRecord]
) -> None:
    # Through a logger, so the suite-wide leak scan reads every line too.
    server = make_server("access-log-secret-Qm41")
    server.access_log = logging.getLogger("tests.access_log").info
    token_url, api_url = server.token_url, server.api_url + "/v1/persons"

    def ask(client_id: str, secret: str) -> requests.Response:
        form = {"grant_type": "client_credentials", "client_id": client_id}
        return requests.post(token_url, data={**form, "client_secret": secret}, timeout=10)

    token = ask("test-client", "access-log-secret-Qm41").json()["access_token"]
    ask("test-client", "access-log-wrong-secret")
    ask("access-log-secret-Qm41", "swapped-Qm41")  # swapped: a secret in the id is not logged
    requests.get(token_url, timeout=10)
    requests.get(api_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    requests.get(api_url, timeout=10)
    requests.get(api_url, headers={"Authorization": "Bearer tvfake_x"}, timeout=10)
    requests.get(server.api_url + "/redirect?to=/x", allow_redirects=False, timeout=10)
    server.inject(Fault.status(503), Fault.reset(), Fault.hang(0.05))
    ask("test-client", "access-log-secret-Qm41")
    for _ in range(2):
        with pytest.raises(requests.RequestException):
            ask("test-client", "access-log-secret-Qm41")

    # Each line is logged before its answer is sent: all are there now.
    shown = {fingerprint(token): "<token>", fingerprint("tvfake_x"): "<other>"}
    lines = [
        re.sub(r"token=([0-9a-f]{12})\b", lambda m: f"token={shown[m[1]]}", record.getMessage())
        for record in debug_log_records
        if record.name == "tests.access_log"
    ]
    assert lines == [
        "token POST /oauth2/token -> 200 client_id=test-client token=<token> expires_in=3600",
        "token POST /oauth2/token -> 400 invalid_client (wrong client_secret for "
        "client_id=test-client)",
        "token POST /oauth2/token -> 400 invalid_client (unknown client_id)",
        "token GET /oauth2/token -> 405 invalid_request",
        "api GET /v1/persons -> 200 client_id=test-client token=<token>",
        "api GET /v1/persons -> 401 (no token)",
        "api GET /v1/persons -> 401 token=<other> (invalid, expired or revoked)",
        "api GET /redirect -> 302",
        "token POST /oauth2/token -> 503 (injected respond)",
        "token POST /oauth2/token -> (injected reset)",
        "token POST /oauth2/token -> (injected hang)",
    ]


def test_without_an_access_log_the_server_logs_nothing(
    make_server: ServerFactory, debug_log_records: list[logging.LogRecord]
) -> None:
    server = make_server("quiet-secret-7c")
    requests.get(server.api_url + "/v1/persons", timeout=10)
    assert server.api_unauthorized_count == 1
    assert not [r for r in debug_log_records if r.name.startswith("tradevest_django.testing")]


def test_the_quickstart_shows_what_the_cli_prints_by_default() -> None:
    docs = (ROOT / "docs" / "quickstart.md").read_text()
    section = docs[docs.index("## Develop without credentials") :]
    shown = re.findall(r"^(TRADEVEST_[A-Z_]+=\S+)$", section, re.MULTILINE)
    defaults = parser().parse_args([])
    server = FakeTradevestServer(
        client_id=defaults.client_id, client_secret=defaults.client_secret, port=defaults.port
    )
    assert shown == env_lines(server)
    assert (defaults.port, defaults.expires_in, defaults.latency) == (8765, 3600, 0.0)
    options = {o for action in parser()._actions for o in action.option_strings} - {"-h", "--help"}
    assert {o for o in options if f"`{o}" in section} == options, "every option is documented"
