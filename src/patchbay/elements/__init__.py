"""Elements every pattern composes: scope, transform, conform, capture."""
