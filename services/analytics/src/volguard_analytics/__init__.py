"""volguard_analytics."""
