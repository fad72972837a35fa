"""Operator commands for a running Rebound: `python -m rebound --help`."""
