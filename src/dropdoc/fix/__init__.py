"""Changing the system: validated sysctl writes (plan/apply/verify/rollback grow here)."""
