"""Trails: canonical bytes (golden), catalog-checked records, and a verifier that names each kind of tampering.

Refresh the golden file on purpose with `VIGIA_UPDATE_GOLDEN=1 pytest tests/test_collectors_trails.py`.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from collectors.logger import LEAKS
from collectors.trails import (ORDER, Head, TrailError, TrailWriter, canonical, head_path, key_id, record_hash,
                               verify_file, verify_lines)

GOLDEN = Path(__file__).parent / "golden" / "trail_record.ndjson"
UPDATE = os.environ.get("VIGIA_UPDATE_GOLDEN") == "1"
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")  # RFC 8032 test 1
KEYS = {key_id(SigningKey(SEED).verify_key): bytes(SigningKey(SEED).verify_key)}
TOOL_CALL = {"tool": "search_docs", "cost": 2, "args_min": {"kind": "pdf", "doc_id": "d-1", "count": 3}}


def test_canonical_bytes_of_a_signed_chained_pair_match_the_golden_file(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr("collectors.trails.os.urandom", lambda n: b"\x01" * n)
    ticks = iter([1795350000.123, 1795350001.456])
    writer = TrailWriter(catalog, "office", "n1", tmp_path, {"acme": SigningKey(SEED)}, clock=lambda: next(ticks))
    writer.append("office.tool_call", scope="office", actor="acme", refs=["c-1"], tenant="acme", data=TOOL_CALL)
    writer.append("office.event", scope="office", actor="acme", refs=["c-1"], tenant="acme",
                  data={"brief_delta_min": {"events": 4, "kind": "brief"}})
    writer.close()
    got = writer.path.read_bytes()
    if UPDATE:
        GOLDEN.write_bytes(got)
    assert got == GOLDEN.read_bytes()
    first, second = (json.loads(line) for line in got.splitlines())
    assert list(first) == list(ORDER) and list(second) == list(ORDER)
    assert (first["meta"]["seq"], first["meta"]["prev"]) == (1, "")
    assert (second["meta"]["seq"], second["meta"]["prev"]) == (2, first["meta"]["hash"])
    assert b"".join(canonical(r) + b"\n" for r in (first, second)) == got
    assert json.loads(head_path(writer.path).read_bytes()) == {"count": 2, "last": second["meta"]["hash"]}
    assert verify_file(writer.path, KEYS, {"acme"}) == []


# ---- the verifier ------------------------------------------------------------------------------

def write_chain(catalog, tmp: Path, n: int = 5, signed: bool = True) -> Path:
    writer = TrailWriter(catalog, "office", "n1", tmp, {"acme": SigningKey(SEED)} if signed else {})
    for i in range(n):
        writer.append("office.event", scope="office", actor="acme", refs=[f"e-{i}"], tenant="acme",
                      data={"brief_delta_min": {"events": i}})
    writer.close()
    return writer.path


def _edit(path: Path, fn) -> None:
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"".join(line + b"\n" for line in fn(lines)))


def _rehash(record: dict, **meta) -> bytes:
    """A record as a forger without the key writes it: changed, unsigned, its hash recomputed."""
    record["meta"] = {k: v for k, v in dict(record["meta"], **meta).items() if k != "key_id"}
    record["sig"] = ""
    record["meta"]["hash"] = record_hash(record)
    return canonical(record)


def _edit_in_place(lines):
    record = json.loads(lines[2])
    record["data"]["brief_delta_min"]["events"] = 99
    return lines[:2] + [canonical(record)] + lines[3:]


def _edit_and_rehash(lines):
    record = json.loads(lines[2])
    record["data"]["brief_delta_min"]["events"] = 99
    return lines[:2] + [_rehash(record)] + lines[3:]


def _tenantless(line: bytes) -> dict:
    """A record to forge from, of no tenant (one of a tenant that must sign is also `unsigned`)."""
    record = json.loads(line)
    del record["meta"]["tenant"]
    return record


def _insert_chained(lines):
    forged = _tenantless(lines[2])  # takes the place of line 3: same seq, prev = line 2's hash
    forged["data"]["brief_delta_min"]["events"] = 42
    return lines[:2] + [_rehash(forged)] + lines[2:]


def _append_chained(lines):
    last = _tenantless(lines[-1])
    return lines + [_rehash(last, prev=last["meta"]["hash"], seq=last["meta"]["seq"] + 1)]


def _insert_fabricated(lines):
    other = _tenantless(lines[0])  # the first record of another chain
    other["data"]["brief_delta_min"]["events"] = 7
    return lines[:2] + [_rehash(other)] + lines[2:]


def _forge_signed(lines):
    record = json.loads(lines[1])
    record["actor"] = "globex"
    record["meta"]["hash"] = record_hash(record)
    return [lines[0], canonical(record)] + lines[2:]


@pytest.mark.parametrize("signed,tamper,expected", [
    pytest.param(True, _edit_in_place, [(3, "modified")], id="an edited record is modified"),
    pytest.param(False, _edit_and_rehash, [(3, "modified")], id="an edited record with a new hash is modified"),
    pytest.param(True, _forge_signed, [(2, "bad_signature"), (2, "modified")],
                 id="a forged signed record fails its signature"),
    pytest.param(True, lambda l: l[:2] + l[3:], [(3, "deleted")], id="a deleted record is named"),
    pytest.param(True, lambda l: l[1:], [(1, "deleted")], id="a deleted first record is named"),
    pytest.param(True, lambda l: l[:-1], [(5, "deleted")], id="a deleted last record is named past the end"),
    pytest.param(True, lambda l: l[:-2], [(4, "deleted")], id="deleted last records are named past the end"),
    pytest.param(True, _insert_chained, [(3, "inserted")], id="a properly chained inserted record is inserted"),
    pytest.param(True, _append_chained, [(6, "inserted")], id="a chained record appended past the head is inserted"),
    pytest.param(True, _insert_fabricated, [(3, "inserted")], id="a record of another chain is inserted"),
    pytest.param(True, lambda l: l[:3] + [l[1]] + l[3:], [(4, "inserted")], id="an inserted copy is inserted"),
    pytest.param(True, lambda l: l[:2] + [l[3], l[2]] + l[4:], [(3, "reordered"), (4, "reordered")],
                 id="a swapped pair is reordered"),
    pytest.param(True, lambda l: l[:3] + [l[4], l[3]], [(4, "reordered"), (5, "reordered")],
                 id="a swapped last pair is reordered"),
    pytest.param(True, lambda l: l[:2] + [b'{"id":"x"'] + l[3:], [(3, "unreadable")], id="a broken line is unreadable"),
])
def test_the_verifier_names_each_kind_of_tampering(catalog, tmp_path, signed, tamper, expected):
    path = write_chain(catalog, tmp_path, signed=signed)
    assert verify_file(path, KEYS, {"acme"} if signed else ()) == []
    _edit(path, tamper)
    assert [(f.line, f.problem) for f in verify_file(path, KEYS, {"acme"} if signed else ())] == expected


def test_stripped_signatures_are_named_even_when_chain_and_head_are_rebuilt(catalog, tmp_path):
    path = write_chain(catalog, tmp_path)
    prev, lines = "", []
    for seq, line in enumerate(path.read_bytes().splitlines(), start=1):
        record = json.loads(line)
        record["data"]["brief_delta_min"]["events"] = 0
        lines.append(_rehash(record, prev=prev, seq=seq))
        prev = record["meta"]["hash"]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    head_path(path).write_text(json.dumps({"count": len(lines), "last": prev}))
    assert [(f.line, f.problem) for f in verify_file(path, KEYS, {"acme"})] == [(n, "unsigned") for n in range(1, 6)]
    assert verify_file(path, KEYS) == [], "without the tenants that must sign, an unsigned chain is a valid chain"


def test_a_signed_record_whose_key_is_unknown_is_named(catalog, tmp_path):
    path = write_chain(catalog, tmp_path, n=2)
    assert [(f.line, f.problem) for f in verify_file(path, {})] == [(1, "unknown_key"), (2, "unknown_key")]


def test_a_missing_head_is_named(catalog, tmp_path):
    path = write_chain(catalog, tmp_path)
    head_path(path).unlink()
    assert [(f.line, f.problem) for f in verify_file(path, KEYS)] == [(0, "no_head")]


def test_a_caller_can_anchor_the_end_with_a_count_from_a_manifest(catalog, tmp_path):
    path = write_chain(catalog, tmp_path)
    lines = path.read_bytes().splitlines()
    assert verify_lines(lines, KEYS, {"acme"}, Head(count=5)) == []
    assert [(f.line, f.problem) for f in verify_lines(lines[:-1], KEYS, {"acme"}, Head(count=5))] == [(5, "deleted")]
    assert verify_lines(lines[:-1], KEYS, {"acme"}) == [], "with no anchor the end of a chain cannot be checked"


def test_a_restarted_writer_starts_its_own_file_and_both_verify(catalog, tmp_path):
    first = write_chain(catalog, tmp_path, 3)
    second = write_chain(catalog, tmp_path, 2)
    assert (first.name, second.name) == ("office-n1.ndjson", "office-n1.1.ndjson")
    assert verify_file(first, KEYS, {"acme"}) == [] and verify_file(second, KEYS, {"acme"}) == []
    assert json.loads(head_path(first).read_bytes())["count"] == 3


def test_appends_from_several_threads_keep_one_chain(catalog, tmp_path):
    writer = TrailWriter(catalog, "office", "n1", tmp_path, {"acme": SigningKey(SEED)})

    def work():
        for _ in range(50):
            writer.append("office.tool_call", scope="office", actor="acme", tenant="acme", data=TOOL_CALL)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert verify_file(writer.path, KEYS, {"acme"}) == []
    assert len(writer.path.read_bytes().splitlines()) == 200


# ---- what a record may carry -------------------------------------------------------------------

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
SECRETS = ["sk_live_abcdefghijklmnop1234", JWT, "alice@example.com", "Bearer abcdefghijklmnop",
           "-----BEGIN PRIVATE KEY-----", "token-0123456789abcdef", "what is the weather"]


def _call(**overrides):
    return dict({"kind": "office.tool_call", "scope": "office", "actor": "acme", "refs": ["c-1"], "data": TOOL_CALL},
                **overrides)


def _data(**fields):
    return _call(data=dict(TOOL_CALL, **fields))


def _args(args_min):
    return _data(args_min=args_min)


@pytest.mark.parametrize("call,field", [
    pytest.param(_call(kind="chat.message"), "trail kind", id="an unknown kind"),
    pytest.param(_call(data={"tool": "search_docs", "cost": 1}), "data.args_min", id="a missing data field"),
    pytest.param(_call(data={}), "data.args_min", id="empty data"),
    pytest.param(_data(prompt="hello"), "data has fields", id="a data field outside the catalog"),
    pytest.param(_data(tool="search docs!"), "data.tool", id="a token with spaces"),
    pytest.param(_data(tool="sk_live_abcdefghijklmnop1234"), "data.tool", id="an API key as a token"),
    pytest.param(_data(cost="1"), "data.cost", id="a counter that is not an int"),
    pytest.param(_args({"query": "what is the weather"}), "data.args_min.query", id="free text in args_min"),
    pytest.param(_args({"password": "hunter2"}), "data.args_min", id="a password key"),
    pytest.param(_args({"api_key": "sk_live_abcdefghijklmnop1234"}), "data.args_min.api_key", id="an API key in args_min"),
    pytest.param(_args({"session": JWT}), "data.args_min.session", id="a JWT in args_min"),
    pytest.param(_args({"to": "alice@example.com"}), "data.args_min.to", id="an e-mail in args_min"),
    pytest.param(_args({"Doc Id": 1}), "data.args_min", id="a key that is not an identifier"),
    pytest.param(_args({"count": -1}), "data.args_min.count", id="a negative counter"),
    pytest.param(_args({"ok": True}), "data.args_min.ok", id="a boolean in args_min"),
    pytest.param(_args({"ids": ["a"]}), "data.args_min.ids", id="a list in args_min"),
    pytest.param(_call(actor="sk_live_abcdefghijklmnop1234"), "actor", id="an API key as actor"),
    pytest.param(_call(scope="alice@example.com"), "scope", id="an e-mail as scope"),
    pytest.param(_call(refs=[JWT]), "refs", id="a JWT in refs"),
    pytest.param(_call(refs="c-1"), "refs", id="refs that are not a list"),
    pytest.param(_call(tenant="token-0123456789abcdef"), "tenant", id="an API key as tenant"),
])
def test_a_record_outside_the_rules_is_refused_naming_kind_and_field_never_the_value(catalog, tmp_path, call, field):
    writer = TrailWriter(catalog, "office", "n1", tmp_path)
    call = dict(call)
    kind = call.pop("kind")
    with pytest.raises(TrailError) as caught:
        writer.append(kind, **call)
    writer.close()
    message = str(caught.value)
    assert "\n" not in message and field in message
    assert kind in message or field == "trail kind"
    assert not any(secret in message for secret in (*SECRETS, "hunter2", "hello", "chat.message"))
    assert not list(tmp_path.rglob("*.ndjson"))


def test_every_kind_of_the_catalog_accepts_its_declared_fields(catalog, tmp_path):
    sample = {"token": "ok", "route": "/v1/items", "id": "x-1", "int": 3, "bool": True, "args_min": {"items": 2, "kind": "pdf"}}
    writer = TrailWriter(catalog, "office", "n1", tmp_path)
    for kind, fields in catalog.trails.kinds.items():
        writer.append(kind, scope="office", actor="acme", data={f: sample[t] for f, t in fields.items()})
    writer.close()
    assert len(writer.path.read_bytes().splitlines()) == len(catalog.trails.kinds)
    assert verify_file(writer.path) == []


# ---- property: nothing outside the rules reaches a file, whatever the input -------------------

FORBIDDEN_KEYS = ["password", "token", "prompt", "email", "payload", "message"]
mixed_text = st.one_of(st.sampled_from(SECRETS), st.text(max_size=40),
                       st.from_regex(r"[A-Za-z0-9_.:/@{}+= -]{1,160}", fullmatch=True))
good_id = st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True)
good_token = st.from_regex(r"[A-Za-z0-9_.:-]{1,24}", fullmatch=True)
good_args = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True),
                            st.one_of(st.integers(0, 10**9), good_token), max_size=4)
bad_args = st.dictionaries(st.one_of(st.sampled_from(FORBIDDEN_KEYS), st.text(max_size=12), good_id),
                           st.one_of(mixed_text, st.integers(), st.booleans(), st.none()), max_size=4)
anything = st.one_of(mixed_text, st.integers(), st.booleans(), st.none(), bad_args)
GOOD = {"id": good_id, "token": good_token, "route": st.from_regex(r"(/[a-z0-9_{}]{1,8}){1,3}", fullmatch=True),
        "int": st.integers(), "bool": st.booleans(), "args_min": good_args}


def _strings(value, path=()):
    """Every (path, string, is_key) of a parsed record: its keys and string values at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key), key, True
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, path)
    elif isinstance(value, str):
        yield path, value, False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draw=st.data())
def test_nothing_outside_the_rules_ever_reaches_a_trail_file(catalog, tmp_path_factory, draw):
    # Each example breaks at most one place (a field, scope, actor, refs, tenant, a missing or an
    # extra data field) with arbitrary input; everything else is random but valid, so that about
    # half the examples write a record and the file is checked.
    kind = draw.draw(st.sampled_from(sorted(catalog.trails.kinds)), label="kind")
    fields = catalog.trails.kinds[kind]
    places = ["scope", "actor", "refs", "tenant", "missing", "extra", *fields]
    broken = draw.draw(st.one_of(st.none(), st.sampled_from(places)), label="broken")

    def value(place, good):
        return draw.draw(anything if place == broken else good, label=place)

    data = {field: value(field, GOOD[ftype]) for field, ftype in fields.items()}
    if broken == "missing":
        del data[draw.draw(st.sampled_from(sorted(fields)))]
    if broken == "extra":
        data[draw.draw(st.sampled_from(FORBIDDEN_KEYS))] = draw.draw(anything)
    call = {"scope": value("scope", good_id), "actor": value("actor", good_id),
            "refs": draw.draw(st.lists(mixed_text, min_size=1, max_size=3) if broken == "refs"
                              else st.lists(good_id, max_size=3), label="refs"),
            "tenant": value("tenant", st.one_of(st.none(), st.just("acme"), good_id))}
    tmp = tmp_path_factory.mktemp("trail")
    writer = TrailWriter(catalog, "office", "n1", tmp, {"acme": SigningKey(SEED)})
    try:
        writer.append(kind, data=data, **call)
    except TrailError as error:
        assert "\n" not in str(error) and not any(secret in str(error) for secret in SECRETS)
    writer.close()

    forbidden = set(catalog.logs.forbidden)
    leaks = {name: pattern for name, pattern in LEAKS.items() if name != "blob"}
    for path in tmp.rglob("*"):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        assert not any(secret.encode() in raw for secret in SECRETS)
        text = raw.decode()
        assert not [name for name, pattern in leaks.items() if pattern.search(text)]
        if path.suffix != ".ndjson":
            continue
        for line in raw.splitlines():
            record = json.loads(line)
            assert list(record) == list(ORDER) and set(record["data"]) == set(fields)
            for where, string, is_key in _strings(record):
                assert not (is_key and string in forbidden), where
                assert len(string) <= 128 and string.isascii() and string.isprintable() and " " not in string
                if where[0] == "data":  # ids may be long random strings (the logger's rule); data may not
                    assert not LEAKS["blob"].search(string), where
            for field, ftype in fields.items():
                if ftype == "args_min":
                    for key, value in record["data"][field].items():
                        assert key not in forbidden and key.isidentifier() and key.islower() and len(key) <= 32
                        assert (type(value) is int and value >= 0) or (type(value) is str and len(value) <= 64)
            assert verify_file(path, KEYS) == []
