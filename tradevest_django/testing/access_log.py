"""The fake server's access log: one line per answered request, with no secret in it.

A line names the request, the status and what decided it. Access tokens appear only as their
fingerprints (:func:`tradevest_django.tokens.fingerprint`, as in the app's own logs), client
secrets never, and a client id only when the server knows it, so a secret pasted into the
client id field stays out of the log too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from tradevest_django.testing.records import ApiRequestRecord, TokenRequestRecord
from tradevest_django.tokens import fingerprint


def token_line(
    record: TokenRequestRecord,
    status: int,
    payload: Mapping[str, object],
    known_clients: Collection[str],
) -> str:
    """``token POST /oauth2/token -> 200 client_id=test-client token=1a2b3c4d5e6f ...``."""
    client_id = record.form.get("client_id", [""])[0]
    known = client_id in known_clients
    line = f"token {record.method} {record.path} -> {status}"
    access_token = payload.get("access_token")
    if isinstance(access_token, str):
        details = [f"token={fingerprint(access_token)}", f"expires_in={payload['expires_in']}"]
        return " ".join([line, f"client_id={client_id}", *details])
    error = payload.get("error")
    if error == "invalid_client":
        why = f"wrong client_secret for client_id={client_id}" if known else "unknown client_id"
        return f"{line} invalid_client ({why})"
    return f"{line} {error}" if error else line


def fault_line(record: TokenRequestRecord, kind: str, status: int | None = None) -> str:
    """``token POST /oauth2/token -> 503 (injected respond)``, for a :class:`Fault`'s answer."""
    answer = f"{status} " if status is not None else ""
    return f"token {record.method} {record.path} -> {answer}(injected {kind})"


def api_line(record: ApiRequestRecord, client_id: str | None) -> str:
    """``api GET /v1/prices -> 200 client_id=test-client token=1a2b3c4d5e6f``."""
    parts = [f"api {record.method} {record.path} -> {record.status}"]
    if client_id is not None:
        parts.append(f"client_id={client_id}")
    if record.token is not None:
        parts.append(f"token={fingerprint(record.token)}")
    if record.status == 401 and client_id is None:
        parts.append("(no token)" if record.token is None else "(invalid, expired or revoked)")
    return " ".join(parts)
