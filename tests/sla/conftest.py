"""SLA fixtures: a shop with agents, buyer messages through the real inbox path at chosen times,
agent replies through the console's domain functions at chosen times."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app import tenancy
from app.auth.access import shop_ids_for
from app.desk import conversations
from app.extensions import db
from app.ingest import inbox, store
from app.models import Conversation, ReplyTurn, Role, Shop, SlaSettings, User
from app.sla import policy
from tests.desk.conftest import make_present
from tests.factories import make_shop, make_user

_msg = itertools.count(1)


@dataclass
class Desk:
    shop_id: int
    agent_id: int
    other_agent_id: int
    supervisor_id: int
    mp: pytest.MonkeyPatch

    def buyer(self, openid: str, at: datetime, text: str = "在吗？") -> int:
        """A buyer message pushed with CreateTime ``at`` and filed at ``at`` (the inbox's own path)."""
        self.mp.setattr(store, "utcnow", lambda: at)
        payload = {
            "Event": "commkf_send_msg_to_kf",
            "FromUserName": openid,
            "CreateTime": int(at.timestamp()),
            "msg_id": f"m{next(_msg)}_{uuid.uuid4().hex[:8]}",
            "msg_type": "text",
            "text": {"content": text},
        }
        announcements = inbox.handle(self.shop_id, payload)
        db.session.commit()
        for announce in announcements:
            announce()
        db.session.remove()
        return conversation_id(openid)

    def scoped(self, user_id: int) -> User:
        """The user, with the session scoped to their shops (what every request and socket event does)."""
        user = db.session.get(User, user_id)
        tenancy.set_scope(db.session(), shop_ids_for(user))
        return user

    def reply(self, user_id: int, conversation: int, at: datetime, text: str = "您好，在的") -> dict:
        self.mp.setattr(conversations, "utcnow", lambda: at)
        user = db.session.get(User, user_id)
        tenancy.set_scope(db.session(), shop_ids_for(user))  # as the console's socket does
        message = conversations.send_reply(user, conversation, uuid.uuid4().hex, "text", {"text": text})
        db.session.remove()
        return message


def conversation_id(openid: str) -> int:
    return db.session.scalar(
        sa.select(Conversation.id)
        .join(Conversation.customer)
        .where(Conversation.customer.property.mapper.class_.openid == openid)
        .order_by(Conversation.id.desc())
        .limit(1)
    )


def turns(conversation: int) -> list[ReplyTurn]:
    db.session.expire_all()
    return db.session.scalars(
        sa.select(ReplyTurn).where(ReplyTurn.conversation_id == conversation).order_by(ReplyTurn.id)
    ).all()


@pytest.fixture
def desk_world(app, monkeypatch) -> Desk:
    with app.app_context():
        shop = make_shop("时钟小店")
        agent = make_user("clock_agent", shops=[shop], display_name="客服小王")
        other = make_user("clock_other", shops=[shop], display_name="客服小张")
        supervisor = make_user("clock_boss", role=Role.SUPERVISOR, shops=[shop], display_name="主管")
        db.session.commit()
        make_present(agent.id)
        world = Desk(shop.id, agent.id, other.id, supervisor.id, monkeypatch)
        db.session.remove()
    return world


def set_policy(shop_id: int, **values) -> None:
    row = db.session.scalar(sa.select(SlaSettings).where(SlaSettings.shop_id == shop_id))
    if row is None:
        row = SlaSettings(shop_id=shop_id)
        db.session.add(row)
    for key, value in values.items():
        setattr(row, key, value)
    db.session.commit()
    policy.forget(shop_id)


def midday_zone(now: datetime | None = None) -> str:
    """A time zone where it is now 12:00-12:59: minutes-old turns are "today" and inside the default
    window whatever the hour the suite runs at (Etc/GMT-N is UTC+N)."""
    offset = ((12 - (now or datetime.now(UTC)).hour + 12) % 24) - 12  # local = UTC + offset, -12..11
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def at_midday(shop_id: int) -> None:
    """Move the shop to a time zone where it is midday now (see midday_zone)."""
    db.session.get(Shop, shop_id).timezone = midday_zone()
    db.session.commit()
    policy.forget(shop_id)


def local(shop_id: int, *args) -> datetime:
    """A shop-local wall-clock time as an aware UTC datetime."""
    tz = db.session.get(Shop, shop_id).tz
    return datetime(*args, tzinfo=tz).astimezone(UTC)


def noon_yesterday(shop_id: int) -> datetime:
    """Inside the default window (08:00-24:00 shop-local), recent enough for the 48 h reply window."""
    tz = db.session.get(Shop, shop_id).tz
    day = (datetime.now(UTC) - timedelta(days=1)).astimezone(tz)
    return day.replace(hour=12, minute=0, second=0, microsecond=0).astimezone(UTC)
