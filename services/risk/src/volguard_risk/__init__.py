"""volguard_risk."""
