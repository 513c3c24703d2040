"""The way in: the FastAPI app, its routes and errors, and the `guatu` command."""
