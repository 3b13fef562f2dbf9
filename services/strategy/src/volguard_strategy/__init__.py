"""volguard_strategy."""
