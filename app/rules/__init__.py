from flask import Blueprint

bp = Blueprint("rules", __name__)

from app.rules import routes  # noqa: E402,F401
