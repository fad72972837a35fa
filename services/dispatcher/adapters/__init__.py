"""The dispatcher's edges to the world: PostgreSQL, SMTP, Kafka and the template files."""
