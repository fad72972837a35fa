"""Segments: who is in a condition over the customer facts, when they enter it, and the
journeys it triggers (timers, backfill with its preview, sizes and members)."""
