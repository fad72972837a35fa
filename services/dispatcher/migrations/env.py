"""Alembic environment of the dispatcher: the shared async runner, schema `dispatcher`."""

from shared.alembic import run_env

run_env()
