"""`POST /v1/recovery/exports`: a user uploads their own export file and gets an answer per record."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import ADA, BEN, auth
from tests.replay.helpers import (
    EXPORT_1_0,
    EXPORT_2_0,
    LOCALSTORAGE_DUMP,
    PRACTICE_REPORT,
    app_database,
    count,
    query,
    replay,
    sync_rows,
)

Client = AsyncTestClient[Litestar]
URL = "/v1/recovery/exports"
NOBODY = ("user_NobodyNobodyNobody00", "nobody@example.com", "user")


# Read once: async tests should not block on file reads.
FILES = {path: path.read_bytes() for path in (EXPORT_1_0, EXPORT_2_0, LOCALSTORAGE_DUMP, PRACTICE_REPORT)}


async def post_export(
    client: Client, body: Path | bytes, user: tuple[str, str, str] = ADA, *, dry_run: bool | None = None,
    **headers: str,
) -> httpx.Response:
    return await client.post(
        URL,
        content=FILES[body] if isinstance(body, Path) else body,
        headers={"Content-Type": "application/json", **auth(user, **headers)},
        params={"dry_run": str(dry_run).lower()} if dry_run is not None else None,
    )


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def nothing_written(db_path: str) -> bool:
    return all(count(db_path, t) == 0 for t in ("sync_data", "recovery_ledger", "recovery_quarantine"))


async def test_an_own_export_gets_an_answer_per_record_like_a_replay(
    client: Client, db_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    response = await post_export(client, EXPORT_2_0)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["dry_run"] is False
    assert answer["received"] == 15 and nonzero(answer["counts"]) == {"inserted": 15}
    assert [r["entity_type"] for r in answer["results"]] == (
        ["logbook_entry"] * 12 + ["goal", "repertoire_item", "user_preferences"])
    ledger = query(db_path, "SELECT upload_id, user_id, source, payload_sha256, received FROM recovery_ledger")
    assert [tuple(r) for r in ledger] == [
        (answer["upload_id"], ADA[0], "export", hashlib.sha256(FILES[EXPORT_2_0]).hexdigest(), 15)]

    replayed = app_database(tmp_path / "replayed.db", ADA, BEN)
    await asyncio.to_thread(replay, capsys, replayed, EXPORT_2_0)
    assert sync_rows(replayed) == sync_rows(db_path)


async def test_another_users_export_is_refused_and_nothing_is_written(client: Client, db_path: str) -> None:
    for export in (EXPORT_2_0, LOCALSTORAGE_DUMP):
        response = await post_export(client, export, user=BEN)
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert ADA[0] in response.json()["detail"] and "not to the signed-in user" in response.json()["detail"]
    assert nothing_written(db_path)


async def test_a_localstorage_dump_brings_its_deletions_and_device(client: Client, db_path: str) -> None:
    response = await post_export(client, LOCALSTORAGE_DUMP)
    assert response.status_code == 200, response.text
    assert nonzero(response.json()["counts"]) == {"inserted": 8, "deleted": 1, "content_duplicate": 1}
    assert {r["device_id"] for r in query(db_path, "SELECT device_id FROM sync_data")} == {"dev_a1B2c3D4e5F6g7H8"}

    header = await post_export(client, EXPORT_1_0, **{"X-Device-ID": "dev_adaPhone000000001"})
    assert header.status_code == 200, header.text
    devices = query(db_path, "SELECT device_id FROM sync_data WHERE entity_type = 'repertoire_item'")
    assert [d["device_id"] for d in devices] == ["dev_adaPhone000000001"]


async def test_a_file_that_names_nobody_belongs_to_the_caller(client: Client, db_path: str) -> None:
    response = await post_export(client, PRACTICE_REPORT, user=BEN)
    assert response.status_code == 200, response.text
    assert nonzero(response.json()["counts"]) == {"inserted": 5}
    assert {r["user_id"] for r in query(db_path, "SELECT user_id FROM sync_data")} == {BEN[0]}


async def test_a_token_whose_id_changed_is_matched_by_email(client: Client, db_path: str) -> None:
    renamed = ("user_IdBeforeTheRebuild00", ADA[1].upper(), "user")
    response = await post_export(client, EXPORT_1_0, user=renamed)
    assert response.status_code == 200, response.text
    assert {r["user_id"] for r in query(db_path, "SELECT user_id FROM sync_data")} == {ADA[0]}


async def test_an_unknown_callers_own_file_is_kept_in_quarantine(client: Client, db_path: str) -> None:
    response = await post_export(client, PRACTICE_REPORT, user=NOBODY)
    assert response.status_code == 200, response.text
    assert nonzero(response.json()["counts"]) == {"quarantined": 5}
    assert {tuple(r) for r in query(db_path, "SELECT owner, reason FROM recovery_quarantine")} == {
        (NOBODY[0], "unknown_user")}
    assert (await post_export(client, EXPORT_1_0, user=NOBODY)).status_code == 403


async def test_a_dry_run_answers_and_writes_nothing(client: Client, db_path: str) -> None:
    response = await post_export(client, EXPORT_2_0, dry_run=True)
    assert response.status_code == 200, response.text
    assert response.json()["dry_run"] is True
    assert nonzero(response.json()["counts"]) == {"inserted": 15}
    assert nothing_written(db_path)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b'{"logbook": [', "application/json", 400, "body"),
        (b"", "application/json", 400, "body"),
        (b'{"hello": "world"}', "application/json", 422, "body"),
        (b'"a string"', "application/json", 422, "body"),
        (json.dumps({"mirubato:logbook:entries": "[{"}).encode(), "application/json", 422,
         "mirubato:logbook:entries"),
        (json.dumps({"logbook": 5}).encode(), "application/json", 422, "logbook"),
        (FILES[EXPORT_2_0], "text/plain", 415, "Content-Type"),
    ],
)
async def test_unreadable_files_get_problem_details(
    client: Client, db_path: str, body: bytes, content_type: str, status: int, field: str
) -> None:
    response = await client.post(URL, content=body, headers={**auth(ADA), "Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == field
    assert nothing_written(db_path)


async def test_a_token_is_required(client: Client) -> None:
    response = await client.post(URL, content=FILES[EXPORT_2_0], headers={"Content-Type": "application/json"})
    assert response.status_code == 401
