"""Route groups: health, layers, features, pages."""
