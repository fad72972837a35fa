from shared.alembic import run_env

run_env()
