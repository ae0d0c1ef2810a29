"""Shared runtime of every CRM part: one way to configure, log, trace, measure, store, publish and serve."""
