"""Build a ``TRADEVEST`` alias from environment variables, with django-environ.

::

    import environ
    from tradevest_django.env import tradevest_env

    env = environ.Env()
    TRADEVEST = {"default": tradevest_env(env)}

reads ``TRADEVEST_CLIENT_ID``, ``TRADEVEST_CLIENT_SECRET``, ``TRADEVEST_ENVIRONMENT`` and the
optional variables below; a second alias uses another prefix::

    TRADEVEST["reporting"] = tradevest_env(env, prefix="TRADEVEST_REPORTING_")

Only variables that are set appear in the result, so the package's defaults apply to the rest,
and missing required ones are reported by the system checks with the variable to set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import environ

#: Option key -> how to read its variable (``str``, ``int``, ``float``, ``tuple``).
VARIABLES: dict[str, str] = {
    "CLIENT_ID": "str",
    "CLIENT_SECRET": "str",
    "ENVIRONMENT": "str",
    "AUTH_URL": "str",
    "API_URL": "str",
    "TOKEN_PATH": "str",
    "SCOPE": "str",
    "CACHE": "str",
    "TOKEN_TIMEOUT": "timeout",
    "TOKEN_RETRIES": "int",
    "TOKEN_DEADLINE": "float",
    "API_TIMEOUT": "timeout",
    "API_RETRIES": "int",
    "EXPIRY_MARGIN": "float",
    "REFRESH_WINDOW": "float",
    "REFRESH_WINDOW_MAX": "float",
    "LOCK_TIMEOUT": "int",
    "FAILURE_COOLDOWN": "int",
    "ENCRYPTION_KEYS": "list",
    "CLIENT_SECRET_FALLBACKS": "list",
    "PRIMARY_SECRET_RETRY": "int",
}


def tradevest_env(env: environ.Env | None = None, prefix: str = "TRADEVEST_") -> dict[str, Any]:
    """Return one alias's ``TRADEVEST`` dict from ``{prefix}CLIENT_ID`` and friends.

    ``TOKEN_TIMEOUT``/``API_TIMEOUT`` accept one number or ``connect,read`` (``"3.05,10"``).
    """
    if env is None:
        import environ  # imported here: projects that do not use this helper never load it

        env = environ.Env()
    options: dict[str, Any] = {}
    for key, kind in VARIABLES.items():
        name = prefix + key
        if name not in env.ENVIRON or env.str(name) == "":
            continue
        if kind == "int":
            options[key] = env.int(name)
        elif kind == "float":
            options[key] = env.float(name)
        elif kind == "list":
            options[key] = env.list(name)
        elif kind == "timeout":
            parts = [float(part) for part in env.list(name)]
            options[key] = parts[0] if len(parts) == 1 else tuple(parts)
        else:
            options[key] = env.str(name)
    return options
