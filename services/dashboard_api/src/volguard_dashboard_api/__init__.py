"""volguard_dashboard_api."""
