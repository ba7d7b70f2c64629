"""When a 401 from the API should replace the token, and when it should not.

A 401 usually means the token is no longer good: drop it and get another. But a 401 can mean
something no new token fixes (a wrong ``Requestor-ID``, a permission, a proxy in the way), and
every token request is billed. The rule, shared by the whole fleet through the cache:

* a rejected token is dropped (``INVALIDATE``), unless
* it was obtained after another token was rejected moments ago (within
  :data:`REJECTION_WINDOW`), and is itself young (obtained within that window, and in the first
  half of its life): then a fresh token is being rejected too, so the fleet stops replacing
  tokens for a cooldown (``COOL_DOWN``). A token rejected near the end of its life is
  expiring, whatever came before, and is simply replaced;
* while that cooldown lasts, rejections change nothing (``IGNORE``): the 401 reaches the caller
  as the API sent it.

Plain functions of data and time, no I/O: the token manager reads and writes the record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .tokens import Token

#: How recent a rejection must be for the next one to count as "a fresh token rejected too".
REJECTION_WINDOW = 10.0


class Verdict(enum.Enum):
    INVALIDATE = "invalidate"
    COOL_DOWN = "cool_down"
    IGNORE = "ignore"


@dataclass(frozen=True)
class Rejection:
    """The last token the fleet saw rejected, on Tradevest's clock."""

    fingerprint: str
    at: float
    cooling_until: float = 0.0

    def to_cache(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "at": self.at, "until": self.cooling_until}

    @classmethod
    def from_cache(cls, data: object) -> Rejection | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["fingerprint"]), float(data["at"]), float(data["until"]))
        except (KeyError, TypeError, ValueError):
            return None


def judge(token: Token, now: float, last: Rejection | None) -> Verdict:
    """What to do about the API rejecting ``token`` at ``now`` (Tradevest's clock)."""
    if last is None:
        return Verdict.INVALIDATE
    if now < last.cooling_until:
        return Verdict.IGNORE
    replaced_a_rejected_one = (
        last.fingerprint != token.fingerprint
        and token.issued_at >= last.at
        and now - last.at <= REJECTION_WINDOW
    )
    young = now - token.issued_at <= min(REJECTION_WINDOW, token.lifetime / 2)
    return Verdict.COOL_DOWN if replaced_a_rejected_one and young else Verdict.INVALIDATE


def record(token: Token, now: float, verdict: Verdict, cooldown: float) -> Rejection:
    """The record to share after ``verdict`` (a cooldown lasts ``cooldown`` seconds)."""
    until = now + cooldown if verdict is Verdict.COOL_DOWN else 0.0
    return Rejection(token.fingerprint, now, until)
