"""The benchmarks run end to end on small sizes and report every figure the README promises.

Figures are not judged here (machines are noisy; `vigia bench ...` measures): this only keeps
the benchmarks from rotting.
"""

from __future__ import annotations

from collectors.bench import bench_logger, bench_overhead, bench_trails
from jobs.bench import bench_rollup


def test_overhead_compares_vigia_and_the_instrumentator_with_the_bare_app(catalog):
    result = bench_overhead(catalog, rounds=1, seconds=0.5, connections=4, progress=lambda *_: None)
    assert result["bare_rps"] > 0 and result["instrumented_rps"] > 0
    assert {"overhead_pct", "instrumentator_overhead_pct", "middleware_cpu_us_per_request"} <= set(result)


def test_logger_and_trails_report_rates_and_ratios(catalog):
    logger = bench_logger(catalog, records=2000, progress=lambda *_: None)
    assert logger["vigia_per_s"] > 0 and logger["stdlib_per_s"] > 0 and logger["ratio"] > 0
    trails = bench_trails(catalog, records=300, progress=lambda *_: None)
    assert trails["unsigned_per_s"] > 0 and trails["signed_per_s"] > 0 and trails["verify_findings"] == 0


def test_rollup_reports_ship_and_load_ratios(catalog):
    result = bench_rollup(catalog, megabytes=1, rows=5000, progress=lambda *_: None, repeat=1)
    assert result["ship_zstd_mb_s"] > 0 and result["ship_gzip6_mb_s"] > 0 and result["ship_ratio"] > 0
    assert result["load_rows_s"] > 0 and result["load_python_rows_s"] > 0 and result["load_ratio"] > 0
