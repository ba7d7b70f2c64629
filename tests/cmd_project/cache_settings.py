"""The subprocess project with ``CACHES`` from the ``CMD_PROJECT_CACHES`` variable (JSON).

For the deploy-check tests of ``tradevest_token --strict``: a local-memory cache, a Redis that
answers, one that does not. Run with ``manage.py ... --settings tests.cmd_project.cache_settings``.
"""

from __future__ import annotations

import json
import os

from tests.cmd_project.settings import *  # noqa: F403

CACHES = json.loads(os.environ["CMD_PROJECT_CACHES"])
