"""Shared fixtures. Expensive keys are made once per test session."""
