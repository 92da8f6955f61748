"""Issue 13 item 2: a lone UTF-16 surrogate (a note cut inside an emoji, which JSON.stringify writes as
`"\\ud83d"` and the app's JSON.parse reads) never refuses the upload it is in. Push, native upload, export
file and NDJSON replay each take it next to good records, store it as the app would (the escape, in
lower case, with the app's checksum over that text), keep the raw bytes, and give it back on pull.
Nesting deeper than the decoder can go is the one whole-body refusal that stays."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service import jsontext
from service.api.live import _encode as live_encode
from service.api.live import decode_message, mutation_of, row_event
from service.replay.cli import main
from service.store.rows import SyncRow
from tests.conftest import ADA, auth, query
from tests.replay.helpers import app_database

Client = AsyncTestClient[Litestar]
DEVICE = "dev_a1B2c3D4e5F6g7H8"
JSON_HEADERS = {"Content-Type": "application/json"}


def entry_bytes(entry_id: str, notes: str) -> bytes:
    """An entry as a device's JSON.stringify writes it; `notes` is JSON string content, escapes as written."""
    return (
        b'{"id":"' + entry_id.encode() + b'","timestamp":1748799900000,"duration":' + str(len(entry_id)).encode()
        + b',"type":"practice","instrument":"piano","notes":"' + notes.encode()
        + b'","updatedAt":"2025-06-01T18:30:12.345Z"}'
    )  # fmt: skip


CUT = entry_bytes("cut", "scales \\ud83d")  # a high surrogate alone
CUT_UPPER = entry_bytes("cut-upper", "\\uDE00 arpeggios")  # a low one alone, escaped in upper case
GOOD = entry_bytes("good", "whole emoji \\ud83c\\udfb9 and \u00e9")  # a proper pair and plain text


def stored(db_path: str) -> dict[str, Any]:
    rows = query(db_path, "SELECT entity_id, data, checksum FROM sync_data WHERE entity_type = 'logbook_entry'")
    return {r["entity_id"]: r for r in rows}


def assert_stored_as_the_app_would(db_path: str) -> None:
    rows = stored(db_path)
    assert set(rows) == {"cut", "cut-upper", "good"}
    assert '"notes":"scales \\ud83d"' in rows["cut"]["data"]
    assert '"notes":"\\ude00 arpeggios"' in rows["cut-upper"]["data"]  # JSON.stringify writes lower case
    assert '"notes":"whole emoji \U0001f3b9 and \u00e9"' in rows["good"]["data"]  # a pair is the character
    for row in rows.values():
        assert hashlib.sha256(row["data"].encode()).hexdigest() == row["checksum"]
    kept = query(db_path, "SELECT entity_id, raw FROM recovery_raw_records")
    raws = {r["entity_id"]: r["raw"].encode() for r in kept}
    assert raws["cut"] == CUT and raws["cut-upper"] == CUT_UPPER and raws["good"] == GOOD
    notes = {r["id"]: r["notes"] for r in query(db_path, "SELECT id, notes FROM logbook_entries")}
    assert notes["cut"] == "scales \ufffd"  # a TEXT column holds UTF-8: D1 writes U+FFFD for it


def push_body() -> bytes:
    return b'{"changes":{"entries":[' + b",".join([CUT, GOOD, CUT_UPPER]) + b'],"goals":[]}}'


async def test_a_push_with_lone_surrogates_stores_every_record(client: Client, db_path: str) -> None:
    response = await client.post("/api/sync/push", content=push_body(), headers=auth(ADA, **JSON_HEADERS))
    assert response.status_code == 200, response.text
    assert response.json()["recovery"]["counts"]["inserted"] == 3
    assert_stored_as_the_app_would(db_path)
    pulled = await client.post("/api/sync/pull", headers=auth(ADA))
    assert pulled.status_code == 200
    assert '"notes":"scales \\ud83d"' in pulled.text  # written back as the escape
    notes = {e["id"]: e["notes"] for e in json.loads(pulled.text)["entries"]}
    assert notes["cut"] == "scales \ud83d"
    again = await client.post("/api/sync/push", content=push_body(), headers=auth(ADA, **JSON_HEADERS))
    assert again.json()["recovery"]["counts"]["duplicate"] == 3


async def test_a_native_upload_with_lone_surrogates_stores_every_record(client: Client, db_path: str) -> None:
    records = b",".join(b'{"entity_type":"logbook_entry","data":' + r + b"}" for r in (CUT, GOOD, CUT_UPPER))
    body = b'{"device_id":"' + DEVICE.encode() + b'","records":[' + records + b'],"deleted":{"goal":["g\\ud800"]}}'
    response = await client.post("/v1/recovery/uploads", content=body, headers=auth(ADA, **JSON_HEADERS))
    assert response.status_code == 200, response.text
    assert response.json()["counts"] == {**response.json()["counts"], "inserted": 3, "deleted": 1}
    assert_stored_as_the_app_would(db_path)


async def test_an_export_file_with_lone_surrogates_stores_every_record(client: Client, db_path: str) -> None:
    body = b'{"version":"2.0","logbook":[' + b",".join([CUT, GOOD, CUT_UPPER]) + b'],"goals":[]}'
    response = await client.post("/v1/recovery/exports", content=body, headers=auth(ADA, **JSON_HEADERS))
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["inserted"] == 3
    assert_stored_as_the_app_would(db_path)


async def test_an_id_with_a_lone_surrogate_is_answered_and_stored(client: Client, db_path: str) -> None:
    body = b'{"changes":{"entries":[' + entry_bytes("id\\udc00", "x") + b"]}}"
    response = await client.post("/api/sync/push", content=body, headers=auth(ADA, **JSON_HEADERS))
    assert response.status_code == 200, response.text
    (row,) = query(db_path, "SELECT entity_id, data FROM sync_data")
    assert row["entity_id"] == "id\ufffd" and '"id":"id\\udc00"' in row["data"]


async def test_nesting_past_the_decoders_limit_is_still_one_400(client: Client) -> None:
    deep = b'{"changes":{"entries":[' + b"[" * 5000 + b'"\\ud83d"' + b"]" * 5000 + b"]}}"
    response = await client.post("/api/sync/push", content=deep, headers=auth(ADA, **JSON_HEADERS))
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


def test_ndjson_replay_with_lone_surrogates_stores_every_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = app_database(tmp_path / "app.db", ADA)
    source = tmp_path / "devices.ndjson"
    line = b'{"user_id":"' + ADA[0].encode() + b'","device_id":"' + DEVICE.encode() + b'","changes":{"entries":['
    source.write_bytes(line + b",".join([CUT, GOOD, CUT_UPPER]) + b"]}}\n")
    capsys.readouterr()
    assert main(["--db", db, "--json", str(source)]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"][0]["bad_lines"] == []
    assert_stored_as_the_app_would(db)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'"\\ud83d"', "\ud83d"),
        (b'{"a":["\\udfff",1.5]}', {"a": ["\udfff", 1.5]}),
        (b'"\\ud83d\\ude00"', "\U0001f600"),
    ],
)
def test_the_shared_decoder_reads_what_json_parse_reads(text: bytes, expected: object) -> None:
    assert jsontext.decode(text) == expected


@pytest.mark.parametrize("text", [b'"\\ud83d', b'["\\ud83d",]', b'{"a":"\\ud83d"} x', b'[NaN,"\\ud83d"]'])
def test_the_shared_decoder_refuses_what_json_parse_refuses(text: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        jsontext.decode(text)


def test_the_live_sync_socket_takes_and_sends_lone_surrogates() -> None:
    """An ENTRY_CREATED event holding one is an upload of its exact bytes; a stored row holding the escape
    goes out as the escape (msgspec alone could neither read nor write it)."""
    message = b'{"type":"ENTRY_CREATED","entry":' + CUT + b',"timestamp":"2025-06-01T18:30:12.345Z"}'
    mutation = mutation_of(decode_message(message))
    assert [record.raw for record in mutation.records] == [CUT]
    row = SyncRow("cut", '{"id":"cut","notes":"scales \\ud83d"}', 7, None)
    event = row_event("logbook_entry", row, created=True)
    assert event is not None and event["entry"]["notes"] == "scales \ud83d"
    assert b'"notes":"scales \\ud83d"' in live_encode(event)


async def test_the_apps_reads_answer_documents_holding_lone_surrogates(client: Client) -> None:
    """`GET /api/goals` and `/api/user/preferences` write the escape back instead of failing with 500."""
    records = (
        b'{"entity_type":"goal","data":{"id":"g-cut","title":"Scales \\ud83d","status":"active"}},'
        b'{"entity_type":"user_preferences","data":{"theme":"dark \\udc00"}}'
    )
    body = b'{"records":[' + records + b"]}"
    response = await client.post("/v1/recovery/uploads", content=body, headers=auth(ADA, **JSON_HEADERS))
    assert response.status_code == 200, response.text
    goals = await client.get("/api/goals", headers=auth(ADA))
    assert goals.status_code == 200, goals.text
    assert "Scales \\ud83d" in goals.text
    preferences = await client.get("/api/user/preferences", headers=auth(ADA))
    assert preferences.status_code == 200, preferences.text
    assert "dark \\udc00" in preferences.text
