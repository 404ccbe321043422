"""Grafana dashboards of seed 004 §7, built with grafanalib from the catalog."""
