"""Everything that flows in from the platform: the push endpoint (a WSGI middleware, webhooks.py),
the inbox, pollers, and the upserts they share."""
