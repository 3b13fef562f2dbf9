"""volguard_common."""
