"""Contracts and plumbing that all three Rebound services use. No business rules live here."""
