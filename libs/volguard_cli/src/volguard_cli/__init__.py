"""volguard_cli."""
