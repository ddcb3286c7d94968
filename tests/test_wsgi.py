"""The entry point every process starts from (wsgi.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_start_up_objects_are_frozen_out_of_the_collectors_sight(tmp_path):
    """What building the app made lives as long as the process: after wsgi.py, a full collection
    walks only what was made since (app.freeze_startup_heap)."""
    probe = (
        "import gc, wsgi\n"
        "frozen = gc.get_freeze_count()\n"
        "walked = len(gc.get_objects())\n"
        "print(frozen, walked)\n"
    )
    env = {
        **os.environ,
        "CHANNELDESK_CONFIG": "development",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'wsgi.db'}",
        "SECRET_KEY": "test-" + "k" * 40,
    }
    env.pop("REDIS_URL", None)
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    frozen, walked = map(int, run.stdout.split()[-2:])
    # The app, SQLAlchemy's mappers, Jinja, Babel... are tens of thousands of objects; a collection
    # after start-up sees a small fraction of them.
    assert frozen > 20_000
    assert walked < frozen / 10
