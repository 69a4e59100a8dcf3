"""Lab scenario modules; each defines SCENARIOS = (Scenario(...), ...)."""
