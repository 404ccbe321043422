"""The server-blind logger: nothing outside the rules is ever written, whatever the input;
sampling is deterministic, holds its rates, keeps every error and follows the spike flag."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.flags import Flags
from collectors.logger import LEAKS, ServerBlindLogger, check_value
from collectors.metrics import Metrics
from collectors.sampling import Sampler
from vigia.model import Sampling


def make_logger(catalog, tmp: Path, flags: Flags | None = None, **kw) -> ServerBlindLogger:
    flags = flags or Flags(sampling_success=1.0)
    return ServerBlindLogger(catalog, "core", "n1", tmp, Sampler(catalog.logs.sampling, flags), Metrics(catalog, "core"), **kw)


def written(tmp: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(tmp.rglob("*.ndjson")) for line in f.read_text().splitlines()]


values = st.one_of(st.text(max_size=300), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False),
                   st.sampled_from(["alice@example.com", "Bearer abcdefghijklmnop", "eyJhbGciOi.eyJzdWIiOiIx.sig",
                                    "-----BEGIN RSA PRIVATE KEY-----", "sk_live_abcdefghijklmnop", "x" * 200,
                                    "/v1/items", "acme", "GET"]))
keys = st.one_of(st.sampled_from(["tenant", "route", "method", "tool", "session_id", "correlation_id", "ok", "code",
                                  "latency_ms", "payload", "params", "message", "email", "args", "body"]), st.text(max_size=20))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.dictionaries(keys, values, max_size=12))
def test_no_key_or_value_outside_the_rules_is_ever_written(catalog, tmp_path_factory, record):
    tmp = tmp_path_factory.mktemp("logs")
    logger = make_logger(catalog, tmp)
    logger.write(record)
    logger.close()
    fields = catalog.logs.fields
    for line in written(tmp):
        assert set(line) <= set(fields)
        assert not set(line) & set(catalog.logs.forbidden)
        for key, value in line.items():
            assert check_value(fields[key], value, catalog.logs.max_value_length) is None, (key, value)
            if isinstance(value, str):
                assert not any(p.search(value) for name, p in LEAKS.items() if name != "blob" or fields[key] != "id")


@pytest.mark.parametrize("field,value,reason", [
    pytest.param("payload", "anything", "unknown_field", id="a forbidden key is dropped"),
    pytest.param("tenant", "alice@example.com", "pattern", id="an e-mail in a token field is dropped"),
    pytest.param("route", "/v1/" + "a" * 200, "too_long", id="an over-long value is dropped"),
    pytest.param("code", "200", "type", id="a string where an int belongs is dropped"),
    pytest.param("correlation_id", "sk_live_abcdefghijklmnop", "api_key", id="a key-shaped id is dropped"),
    pytest.param("tool", "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.abc", "jwt", id="a JWT is dropped"),
    pytest.param("code", True, "type", id="a bool where an int belongs is dropped"),
    pytest.param("latency_ms", 1.5, "type", id="a float where an int belongs is dropped"),
    pytest.param("component", "evil", "reserved", id="the logger's own fields cannot be overwritten"),
])
def test_each_rule_drops_the_value_and_counts_the_reason(catalog, tmp_path, field, value, reason):
    logger = make_logger(catalog, tmp_path)
    logger.write({"ok": True, field: value})
    logger.close()
    [line] = written(tmp_path)
    assert line.get(field) != value  # absent, or the logger's own value
    counter = logger._metrics.registry.get_sample_value("vigia_log_dropped_total", {"reason": reason})
    assert counter == 1


def test_each_record_has_rfc3339_millisecond_utc_time_and_one_file_per_day(catalog, tmp_path):
    now = [1795350000.123]
    logger = make_logger(catalog, tmp_path, clock=lambda: now[0])
    for t in (1795350000.123, 1795350000.5, 1795350000.5 + 86400):
        now[0] = t
        logger.write({"ok": True})
    logger.close()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.ndjson"))
    assert files == ["logs/2026/11/22/core-n1.ndjson", "logs/2026/11/23/core-n1.ndjson"]
    assert written(tmp_path)[0]["ts"] == "2026-11-22T12:20:00.123Z"


def test_sampling_is_deterministic_and_keeps_a_requests_lines_together(catalog):
    sampler = Sampler(catalog.logs.sampling, Flags())
    ids = [os.urandom(8).hex() for _ in range(2000)]
    first = [sampler.keep(i, True) for i in ids]
    assert first == [sampler.keep(i, True) for i in ids]
    assert first == [Sampler(catalog.logs.sampling, Flags()).keep(i, True) for i in ids]


@pytest.mark.parametrize("spike,expected", [
    pytest.param(False, 0.01, id="success is sampled at 1 percent"),
    pytest.param(True, 0.10, id="the spike flag raises success to 10 percent at runtime"),
])
def test_success_rates_hold_within_five_sigma(catalog, spike, expected):
    flags = Flags()
    sampler = Sampler(catalog.logs.sampling, flags)
    flags.update(spike=spike)
    n = 40_000
    kept = sum(sampler.keep(os.urandom(8).hex(), True, "/v1/items") for _ in range(n))
    sigma = math.sqrt(n * expected * (1 - expected))
    assert abs(kept - n * expected) < 5 * sigma


def test_overrides_set_the_rate_both_ways_and_log_level_filters_by_severity():
    sampling = Sampling(success=0.5, error=1.0, spike=0.9, routes={"/v1/quiet": 0.0}, tools={"loud": 1.0})
    flags = Flags()
    sampler = Sampler(sampling, flags)
    assert sampler.success_rate(route="/v1/quiet") == 0.0 and sampler.success_rate(tool="loud") == 1.0
    flags.update(spike=True)
    assert sampler.success_rate(route="/v1/quiet") == 0.9
    flags.update(spike=False, log_level="debug")
    assert sampler.success_rate(route="/v1/quiet") == 1.0
    flags.update(log_level="error")
    assert not sampler.keep("any", True, tool="loud") and sampler.keep("any", False)


def test_a_node_name_that_is_not_a_token_is_refused(catalog, tmp_path):
    with pytest.raises(ValueError, match="node name"):
        ServerBlindLogger(catalog, "core", 'n1","tenant":"x', tmp_path, Sampler(catalog.logs.sampling, Flags()))


def test_errors_are_always_kept_and_overrides_apply(catalog):
    sampler = Sampler(catalog.logs.sampling, Flags())
    assert all(sampler.keep(os.urandom(8).hex(), False) for _ in range(5000))
    assert sampler.success_rate(route="/v1/webhooks") == catalog.logs.sampling.routes["/v1/webhooks"]
    assert sampler.success_rate(tool="create_task") == catalog.logs.sampling.tools["create_task"]


def _append_many(catalog_path: str, tmp: str, worker: int) -> None:
    from vigia.catalog import load
    catalog = load(catalog_path)
    logger = make_logger(catalog, Path(tmp), buffer_bytes=512)
    for i in range(3000):
        logger.write({"ok": True, "correlation_id": f"w{worker}-{i}", "route": "/v1/items", "latency_ms": i})
    logger.close()


def test_several_processes_appending_to_one_file_produce_only_whole_lines(tmp_path):
    root = Path(__file__).resolve().parent.parent / "stack.yaml"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(root), str(tmp_path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    [path] = list(tmp_path.rglob("*.ndjson"))
    lines = path.read_bytes().splitlines()
    assert len(lines) == 9000
    ids = {json.loads(line)["correlation_id"] for line in lines}
    assert len(ids) == 9000


def test_threads_writing_at_once_lose_no_record_and_the_counter_matches_the_file(catalog, tmp_path):
    logger = make_logger(catalog, tmp_path, buffer_bytes=4096)

    def write_many(worker: int) -> None:
        for i in range(5000):
            logger.log(ok=True, correlation_id=f"t{worker}x{i}", route="/v1/items", latency_ms=i)

    threads = [threading.Thread(target=write_many, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logger.close()
    ids = [record["correlation_id"] for record in written(tmp_path)]
    assert len(ids) == len(set(ids)) == 20000
    registry = logger._metrics.registry
    assert registry.get_sample_value("vigia_log_records_total", {"outcome": "written"}) == 20000
    assert registry.get_sample_value("vigia_log_records_total", {"outcome": "sampled_out"}) == 0
