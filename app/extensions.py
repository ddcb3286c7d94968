"""Extensions, made once here and bound to the app in create_app with init_app."""

from __future__ import annotations

from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect

from app.db import Base

# Our models derive from app.db.Base (plain SQLAlchemy 2.x); Flask-SQLAlchemy manages sessions and engines.
db = SQLAlchemy(metadata=Base.metadata)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel()
# async_mode="threading" with simple-websocket: the maintainer's advice for new projects.
# async_handlers=False: a client's events are handled one after another, in the order it sent them
# (two quick replies reach the buyer in the order the agent typed them); other clients are not held up.
socketio = SocketIO(async_mode="threading", async_handlers=False)
limiter = Limiter(key_func=get_remote_address, default_limits=[])
