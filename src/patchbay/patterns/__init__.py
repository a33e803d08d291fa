"""Patterns: thin compositions of source, scope, transform, destination and capture."""
