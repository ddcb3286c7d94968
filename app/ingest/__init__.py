"""Everything that flows in from the platform: webhooks, the inbox, pollers, and the upserts they share."""

from flask import Blueprint

bp = Blueprint("ingest", __name__)

from app.ingest import webhooks  # noqa: E402,F401
