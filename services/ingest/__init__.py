"""ingest: verifies shop webhooks, turns them into canonical events and keeps the customer facts."""
