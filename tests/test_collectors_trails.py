"""Trails: canonical bytes (golden), catalog-checked data, and a verifier that names each kind of tampering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from collectors.trails import TrailError, TrailWriter, canonical, key_id, verify_file

GOLDEN = Path(__file__).parent / "golden" / "trail_record.ndjson"
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")  # RFC 8032 test 1


def fixed_writer(catalog, tmp: Path, signed: bool = True) -> TrailWriter:
    keys = {"acme": SigningKey(SEED)} if signed else {}
    return TrailWriter(catalog, "office", "n1", tmp, keys, clock=lambda: 1795350000.123)


def test_canonical_bytes_match_the_golden_record(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr("collectors.trails.os.urandom", lambda n: b"\x01" * n)
    writer = fixed_writer(catalog, tmp_path)
    writer.append("office.tool_call", scope="office", actor="acme", refs=["c-1"], tenant="acme",
                  data={"tool": "search_docs", "cost": 2, "args_min": {"kind": "pdf", "doc_id": "d-1", "count": 3}})
    writer.close()
    [path] = tmp_path.rglob("*.ndjson")
    got = path.read_bytes()
    assert got == GOLDEN.read_bytes()
    record = json.loads(got)
    assert list(record) == ["id", "ts", "kind", "scope", "actor", "refs", "data", "meta", "sig"]
    assert canonical(record) + b"\n" == got


def write_chain(catalog, tmp: Path, n: int = 5) -> tuple[Path, dict]:
    key = SigningKey(SEED)
    writer = TrailWriter(catalog, "office", "n1", tmp, {"acme": key})
    for i in range(n):
        writer.append("office.event", scope="office", actor="acme", refs=[f"e-{i}"], tenant="acme",
                      data={"brief_delta_min": {"events": i}})
    writer.close()
    [path] = tmp.rglob("*.ndjson")
    return path, {key_id(key.verify_key): bytes(key.verify_key)}


def test_an_untouched_chain_verifies(catalog, tmp_path):
    path, keys = write_chain(catalog, tmp_path)
    assert verify_file(path, keys) == []


def _edit(path: Path, fn) -> None:
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join(fn(lines)) + b"\n")


def _modify(lines):
    record = json.loads(lines[2])
    record["data"]["brief_delta_min"]["events"] = 99
    return lines[:2] + [canonical(record)] + lines[3:]


@pytest.mark.parametrize("tamper,expected", [
    pytest.param(_modify, [(3, "modified")], id="a modified record is named"),
    pytest.param(lambda l: l[:2] + l[3:], [(3, "deleted")], id="a deleted record is named"),
    pytest.param(lambda l: l[:2] + [l[3], l[2]] + l[4:], [(3, "reordered"), (4, "reordered")], id="reordered records are named"),
    pytest.param(lambda l: l[:3] + [l[1]] + l[3:], [(4, "reordered"), (5, "reordered")], id="an inserted copy is named"),
])
def test_the_verifier_names_each_kind_of_tampering(catalog, tmp_path, tamper, expected):
    path, keys = write_chain(catalog, tmp_path)
    _edit(path, tamper)
    found = [(f.line, f.problem) for f in verify_file(path, keys)]
    for item in expected:
        assert item in found, found


def test_a_forged_record_with_a_recomputed_hash_fails_its_signature(catalog, tmp_path):
    from collectors.trails import record_hash
    path, keys = write_chain(catalog, tmp_path)

    def forge(lines):
        record = json.loads(lines[1])
        record["actor"] = "globex"
        record["meta"]["hash"] = record_hash(record)
        return [lines[0], canonical(record)] + lines[2:]

    _edit(path, forge)
    problems = {(f.line, f.problem) for f in verify_file(path, keys)}
    assert (2, "bad_signature") in problems


def test_a_fabricated_record_inserted_into_the_chain_is_named(catalog, tmp_path):
    path, keys = write_chain(catalog, tmp_path)
    other = tmp_path / "other"
    fake_writer = TrailWriter(catalog, "office", "n1", other)
    fake = fake_writer.append("office.event", scope="office", actor="acme", data={"brief_delta_min": {"events": 7}})
    fake_writer.close()
    _edit(path, lambda l: l[:2] + [canonical(fake)] + l[2:])
    problems = {(f.line, f.problem) for f in verify_file(path, keys)}
    assert problems & {(3, "deleted"), (3, "inserted"), (4, "deleted")}


@pytest.mark.parametrize("kind,data", [
    pytest.param("office.tool_call", {"tool": "search_docs", "args_min": {"query": "what is the weather"}, "cost": 1},
                 id="free text in args_min is refused"),
    pytest.param("office.tool_call", {"tool": "search_docs", "prompt": "hello", "cost": 1}, id="a data field outside the catalog is refused"),
    pytest.param("chat.message", {}, id="an unknown kind is refused"),
    pytest.param("office.tool_call", {"tool": "search docs!", "cost": 1}, id="a token with spaces is refused"),
    pytest.param("office.tool_call", {"tool": "search_docs", "cost": "1"}, id="a counter that is not an int is refused"),
])
def test_trail_data_is_checked_against_the_catalog(catalog, tmp_path, kind, data):
    writer = fixed_writer(catalog, tmp_path, signed=False)
    with pytest.raises(TrailError):
        writer.append(kind, scope="office", actor="acme", data=data)
    assert not list(tmp_path.rglob("*.ndjson")) or all(p.stat().st_size == 0 for p in tmp_path.rglob("*.ndjson"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.dictionaries(st.text(max_size=40), st.one_of(st.text(max_size=80), st.integers(), st.booleans(), st.none()), max_size=6))
def test_no_free_text_ever_reaches_a_trail_file(catalog, tmp_path_factory, args):
    tmp = tmp_path_factory.mktemp("trail")
    writer = fixed_writer(catalog, tmp, signed=False)
    try:
        writer.append("office.tool_call", scope="office", actor="acme", data={"tool": "search_docs", "args_min": args, "cost": 1})
    except TrailError:
        pass
    writer.close()
    for path in tmp.rglob("*.ndjson"):
        for line in path.read_text().splitlines():
            for key, value in json.loads(line)["data"]["args_min"].items():
                assert key.isidentifier() and key.islower()
                assert isinstance(value, int) or (" " not in value and len(value) <= 64)


def test_a_restarted_writer_continues_the_files_chain(catalog, tmp_path):
    path, keys = write_chain(catalog, tmp_path, 3)
    writer = TrailWriter(catalog, "office", "n1", tmp_path, {"acme": SigningKey(SEED)})
    writer.append("office.event", scope="office", actor="acme", tenant="acme", data={"brief_delta_min": {"events": 1}})
    writer.close()
    assert verify_file(path, keys) == []
    assert len(path.read_text().splitlines()) == 4
