"""``python -m tradevest_django.testing``: the fake Tradevest server, for developing without
credentials.

Serves :class:`~tradevest_django.testing.FakeTradevestServer` (auth server and API on one
loopback port) in the foreground, prints the ``.env`` lines that point a project at it on
stdout, and logs one line per request on stderr. Ctrl-C or SIGTERM stops it (exit status 0).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence

from tradevest_django.testing.server import FakeTradevestServer

logger = logging.getLogger("tradevest_django.testing")
#: The signals that stop the server (exit status 0).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _milliseconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 600_000:
        raise argparse.ArgumentTypeError(f"expected 0 to 600000 milliseconds, not {text}")
    return value


def _seconds(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds from 1, not {text}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line: every option has a default, so no option is needed."""
    cli = argparse.ArgumentParser(
        prog="python -m tradevest_django.testing",
        description="Run a fake Tradevest auth server and API on loopback, and print the .env "
        "lines that point your project at it. For development without credentials; never for "
        "real data.",
    )
    cli.add_argument(
        "--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0 picks one)"
    )
    cli.add_argument("--client-id", default="test-client", help="default: test-client")
    cli.add_argument("--client-secret", default="test-secret", help="default: test-secret")
    cli.add_argument(
        "--expires-in",
        type=_seconds,
        default=3600,
        metavar="N",
        help="lifetime of the tokens it issues, in seconds (default 3600)",
    )
    cli.add_argument(
        "--latency",
        type=_milliseconds,
        default=0.0,
        metavar="MS",
        help="delay every answer by MS milliseconds (default 0)",
    )
    return cli


def env_lines(server: FakeTradevestServer) -> list[str]:
    """The ``.env`` lines that point ``tradevest_env(env)`` at ``server``."""
    return [
        f"TRADEVEST_AUTH_URL={server.auth_url}",
        f"TRADEVEST_API_URL={server.api_url}",
        f"TRADEVEST_CLIENT_ID={server.client_id}",
        f"TRADEVEST_CLIENT_SECRET={server.client_secret}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM; return the exit status."""
    options = parser().parse_args(argv)
    server = FakeTradevestServer(
        client_id=options.client_id,
        client_secret=options.client_secret,
        token_lifetime=options.expires_in,
        port=options.port,
    )
    server.token_delay = server.api_delay = options.latency / 1000
    server.access_log = logger.info
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        server.start()
    except OSError as err:
        logger.error(
            "Cannot listen on 127.0.0.1:%s (%s); choose another port with --port (0 picks a "
            "free one).",
            options.port,
            err.strerror or err,
        )
        logger.removeHandler(handler)
        return 1
    # SIGTERM (a process manager, `kill`) stops the server the way Ctrl-C does. SIGINT is set
    # too: a shell starts a background job (`... &` in a script, CI) with SIGINT ignored, and
    # Python then never raises KeyboardInterrupt, so `kill -INT` would do nothing.
    previous = {
        signum: signal.signal(signum, signal.default_int_handler) for signum in STOP_SIGNALS
    }
    try:
        print("# The fake Tradevest server: paste these lines into your .env", flush=True)
        print("\n".join(env_lines(server)), flush=True)
        logger.info(
            "Fake Tradevest auth server and API on %s (token path %s); Ctrl-C stops it.",
            server.url,
            server.token_path,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        for signum, disposition in previous.items():
            signal.signal(signum, disposition)
        logger.info("Stopped.")
        logger.removeHandler(handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
