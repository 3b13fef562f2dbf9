"""volguard_execution."""
