"""juki loaders: reading, validating and writing files; the synthetic population generator."""
