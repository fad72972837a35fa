"""The only ingest code that talks to PostgreSQL and Kafka."""
