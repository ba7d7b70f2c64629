"""Settings of the subprocess test project: everything that varies comes from the environment.

``TRADEVEST_*`` variables build the ``default`` alias (through ``tradevest_env``, as a real
project would); ``CMD_PROJECT_CACHE_DIR`` holds a file-based cache that separate processes share.
"""

from __future__ import annotations

import os

from tradevest_django.env import tradevest_env

SECRET_KEY = "cmd-project-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["tradevest_django"]
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": os.environ["CMD_PROJECT_CACHE_DIR"],
    }
}
TRADEVEST = {"default": tradevest_env()}
