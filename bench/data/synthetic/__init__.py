"""Procedural synthetic pose domains: the embedded default benchmark."""
