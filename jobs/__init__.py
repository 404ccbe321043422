"""Rollup jobs: ship logs and trails to object storage and ClickHouse, verifiably."""
