"""The engine: geometry, CRS, validation and database plumbing (no layers, no HTTP, no HTML)."""
