"""Rows kept loaded across commits (``app.db.keeping``): what a thread just stored is used as stored,
everything else is read again, and a locked read always sees the database's value."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.db import commit_keeping, keeping
from app.extensions import db
from app.ingest.store import locked
from app.models import Shop
from tests.factories import make_shop
from tests.statements import statements


@pytest.fixture
def shops(app):
    with app.app_context():
        ids = [make_shop(f"keep-{n}").id for n in range(3)]
        db.session.commit()
        db.session.remove()
    return ids


def _loaded(*rows) -> list[Shop]:
    return [db.session.get(Shop, pk) for pk in rows]


def _reads(run) -> int:
    """How many statements ``run`` sends."""
    return len(statements(db.engine, run))


def _rename_elsewhere(pk: int, name: str) -> None:
    """Another worker's committed write."""
    with db.engine.begin() as conn:
        conn.execute(sa.update(Shop.__table__).where(Shop.__table__.c.id == pk).values(name=name))


def test_a_kept_row_is_not_read_again_after_the_commits_inside_the_block(app, shops):
    with app.app_context():
        kept, other, _ = _loaded(*shops)
        with keeping(db.session, kept):
            db.session.commit()
            db.session.commit()
            assert _reads(lambda: kept.name) == 0
            assert _reads(lambda: other.name) == 1, "everything else expires at the commit as usual"
        db.session.commit()
        assert _reads(lambda: kept.name) == 1, "after the block a commit expires it again"
        assert db.session().expire_on_commit is True
        db.session.remove()


def test_blocks_nest_and_commit_keeping_adds_its_rows_for_one_commit(app, shops):
    with app.app_context():
        first, second, third = _loaded(*shops)
        with keeping(db.session, first):
            with keeping(db.session, second):
                db.session.commit()
                assert _reads(lambda: (first.name, second.name)) == 0
            assert _reads(lambda: third.name) == 1, "the inner commit expired it: not kept there"
            commit_keeping(db.session, third)
            assert _reads(lambda: (first.name, third.name)) == 0
            assert _reads(lambda: second.name) == 1, "the inner block's row is no longer kept"
        db.session.remove()


def test_a_rollback_expires_kept_rows_too(app, shops):
    with app.app_context():
        [kept] = _loaded(shops[0])
        with keeping(db.session, kept):
            db.session.rollback()
            assert _reads(lambda: kept.name) == 1
        db.session.remove()


def test_a_locked_read_sees_what_another_worker_committed_over_a_kept_row(app, shops):
    """What read-compare-write relies on: ``locked`` refreshes the row the session holds."""
    with app.app_context():
        [kept] = _loaded(shops[0])
        with keeping(db.session, kept):
            db.session.commit()
            _rename_elsewhere(kept.id, "renamed elsewhere")
            assert kept.name == "keep-0", "kept: as this thread last read it"
            again = db.session.scalar(locked(sa.select(Shop).where(Shop.id == kept.id)))
            assert again is kept and kept.name == "renamed elsewhere"
            db.session.commit()
        db.session.remove()


def test_the_session_setting_comes_back_when_the_block_fails(app, shops):
    with app.app_context():
        [kept] = _loaded(shops[0])
        with pytest.raises(RuntimeError), keeping(db.session, kept):
            raise RuntimeError("boom")
        assert db.session().expire_on_commit is True and "channeldesk.keep" not in db.session().info
        db.session.commit()
        assert _reads(lambda: kept.name) == 1
        db.session.remove()
