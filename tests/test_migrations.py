"""Migrations build the schema from nothing, match the models exactly, and go down again.

Runs on SQLite by default and on PostgreSQL under `make test` (CHANNELDESK_TEST_DB), each time in a
database of its own.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from app.testing import temporary_database
from tests.conftest import _postgres_admin_url, make_config

pytestmark = pytest.mark.db


@pytest.fixture
def empty_database_url(tmp_path):
    admin_url = _postgres_admin_url()
    if admin_url is None:
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    with temporary_database(admin_url, "channeldesk_mig") as url:
        yield url


def _diff(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def test_upgrade_from_empty_matches_the_models_and_downgrades(empty_database_url):
    app = create_app(make_config(empty_database_url))
    with app.app_context():
        try:
            upgrade()
            assert _diff(db.engine) == [], "models and migrations differ: run `make migration m=...`"
            downgrade(revision="base")
            assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
            upgrade()
            assert "shops" in sa.inspect(db.engine).get_table_names()
        finally:
            db.session.remove()
            db.engine.dispose()


def test_there_is_one_head(app):
    from alembic.script import ScriptDirectory

    with app.app_context():
        config = app.extensions["migrate"].migrate.get_config()
        assert len(ScriptDirectory.from_config(config).get_heads()) == 1
