"""Tradevest's contract for the token endpoint, shipped with the package as an OpenAPI document.

The document (``openapi.json`` beside this module) is written out from Tradevest's published
Authorization API. The package's own suite validates every token request it sends, and every
answer of :class:`~tradevest_django.testing.FakeTradevestServer`, against it; a project's suite
can do the same with any OpenAPI validator.
"""

from __future__ import annotations

from pathlib import Path


def openapi_path() -> Path:
    """The path of the OpenAPI 3.0 document of Tradevest's token endpoint (``POST /oauth2/token``).

    It is a real file in the installed package, so it can be opened, or handed to a tool that
    wants a path::

        from openapi_core import OpenAPI

        api = OpenAPI.from_path(openapi_path())

    Its ``servers`` are Tradevest's test and pretest auth hosts; to validate traffic of the fake
    server, replace them with ``[{"url": server.url}]``.
    """
    return Path(__file__).resolve().with_name("openapi.json")
