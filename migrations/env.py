"""Alembic environment, run through Flask-Migrate (`flask db ...`).

Migrations must not import application code: the custom column types (UTCDateTime, EncryptedText,
portable enums) are rendered as the plain SQL types they store.
"""

import logging

import sqlalchemy as sa
from alembic import context
from flask import current_app
from sqlalchemy.types import TypeDecorator

logger = logging.getLogger("alembic.env")
config = context.config
target_db = current_app.extensions["migrate"].db


def render_item(type_, obj, autogen_context):
    """Render TypeDecorators as their underlying type, so migrations stay free of app imports."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        impl = obj.impl if isinstance(obj.impl, sa.types.TypeEngine) else obj.impl()
        return f"sa.{impl!r}"
    return False


def process_revision_directives(context_, revision, directives):
    # `flask db migrate` with no model change writes no empty revision.
    if getattr(config.cmd_opts, "autogenerate", False):
        script = directives[0]
        if script.upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected.")


def configure_kwargs() -> dict:
    kwargs = dict(current_app.extensions["migrate"].configure_args)
    kwargs.setdefault("compare_type", True)
    kwargs.setdefault("render_as_batch", True)
    kwargs["render_item"] = render_item
    if kwargs.get("process_revision_directives") is None:
        kwargs["process_revision_directives"] = process_revision_directives
    return kwargs


def run_migrations_offline():
    context.configure(
        url=str(target_db.engine.url), target_metadata=target_db.metadata, literal_binds=True, **configure_kwargs()
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connectable = target_db.engine
    with connectable.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        try:
            context.configure(connection=connection, target_metadata=target_db.metadata, **configure_kwargs())
            with context.begin_transaction():
                context.run_migrations()
            if sqlite:
                _check_foreign_keys(connection)
        finally:
            if sqlite:
                _sqlite_foreign_keys(connection, on=True)


# SQLite alters most tables by rebuilding them (batch mode: copy, drop the old table, rename the
# copy). With foreign keys on, dropping the old table first deletes its rows and so runs every
# ON DELETE action pointing at it: rebuilding `users` would delete every membership and unassign
# every conversation, rebuilding `conversations` would delete every message. SQLite's documented
# procedure for such changes: foreign keys off for the run (the pragma does nothing inside a
# transaction), then `foreign_key_check` before the application works on the result.


def _sqlite_foreign_keys(connection, on: bool) -> None:
    connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    connection.commit()


def _check_foreign_keys(connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    connection.commit()
    if broken:
        raise RuntimeError(f"the migrations left rows whose foreign keys point nowhere: {broken[:10]}")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
