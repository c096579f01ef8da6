"""Hardening suites: bad input, secrets, faults, load and auth against the worker."""
