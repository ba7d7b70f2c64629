#!/usr/bin/env python
"""``manage.py`` of the subprocess test project (``tests.cmd_project.settings``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The repository root, so that ``tests.cmd_project`` imports from any working directory.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.cmd_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
