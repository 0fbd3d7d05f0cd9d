"""Method adapters, their registry and their cards."""
