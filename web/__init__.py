"""How it looks: folium map builders, templates and static assets (no routes, no sessions)."""
