"""WSGI entry point: `gunicorn -w 1 --threads 8 wsgi:app` in production, `flask --app wsgi run` locally."""

from app import create_app

app = create_app()
