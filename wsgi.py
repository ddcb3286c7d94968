"""WSGI entry point: `gunicorn -w 1 --threads 8 wsgi:app` in production, `flask --app wsgi run` locally.

Every process of the desk starts here (web, `flask workers`, `flask scheduler`, migrations)."""

from app import create_app, freeze_startup_heap

app = create_app()
freeze_startup_heap()  # what start-up built stays for the process's life: no collection walks it again
