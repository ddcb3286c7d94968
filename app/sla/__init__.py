from flask import Blueprint

bp = Blueprint("sla", __name__)

from app.sla import routes  # noqa: E402,F401
