"""Renderers for the stack's infrastructure configs: pure functions from the catalog model to data."""
