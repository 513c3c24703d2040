"""Alembic migrations of the guatu schema."""
