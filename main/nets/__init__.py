"""The networks: seed architecture defaults, builders, length rules and weight files."""
