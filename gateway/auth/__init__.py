"""SMART Backend Services: registered clients, the token endpoint, bearer-token checks."""
