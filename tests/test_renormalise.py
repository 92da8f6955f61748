"""`python -m service renormalise`: a database an earlier version recovered (built here by running the
earlier rules, `tests/old_rules.py`) ends, from its kept raw records, with the rows the current rules
store, with every guarantee kept: versions and seq bumped for what changed, what was overwritten
archived, nothing deleted, and a second run changes nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from service import changefeed, jsontext
from service.changefeed import LocalFeed
from service.cli import main
from service.domain.checksum import canonical_json, js_stringify
from service.domain.owners import UserRecord
from service.renormalise import ARCHIVE_REASON, RenormaliseReport, renormalise
from service.store.sqlite.engine import SqliteStorage
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest
from tests.conftest import ADA, BEN, add_users, query
from tests.old_rules import old_rules

NOW_MS = 1_764_500_000_000
ADA_USER = UserRecord(ADA[0], ADA[1], "user")
BEN_USER = UserRecord(BEN[0], BEN[1], "user")
DEVICE = "dev_a1B2c3D4e5F6g7H8"
OTHER_DEVICE = "dev_b2C3d4E5f6G7h8I9"


def entry(entry_id: str, pieces: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"id": entry_id, "timestamp": 1748799900000, "duration": 20, "type": "practice", "instrument": "piano",
            "pieces": pieces, "updatedAt": "2025-06-01T18:30:12.345Z", **fields}  # fmt: skip


# (user, device, entity type, record) in upload order; then deletions.
UPLOADS: list[tuple[UserRecord, str, str, dict[str, Any]]] = [
    # Existing ids the earlier rules rewrote (periods, typography): now only case, trim and delimiter change.
    (ADA_USER, DEVICE, "logbook_entry",
     entry("e-periods", [{"id": "L\u00e1grima-W.A. Mozart", "title": "L\u00e1grima"}])),
    (ADA_USER, DEVICE, "logbook_entry", entry("e-dash", [{"title": "Flight of the Bumblebee",
                                                         "composer": "Nikolai Rimsky\u2013Korsakov"}])),
    # Two ids the earlier rules made the same piece: the second was a content duplicate of the first.
    (ADA_USER, DEVICE, "logbook_entry", entry("e-dup-a", [{"id": "Sonata - Rondo||W.A. Mozart"}], duration=33)),
    (ADA_USER, OTHER_DEVICE, "logbook_entry", entry("e-dup-b", [{"id": "sonata - rondo||wa mozart"}], duration=33)),
    # Unchanged by the new rules: must not be rewritten.
    (ADA_USER, DEVICE, "logbook_entry", entry("e-same", [{"title": "Nocturne", "composer": "Chopin"}], duration=5)),
    # Number spelling only.
    (ADA_USER, DEVICE, "logbook_entry", entry("e-numbers", [], duration=7, metadata={"bpm": 1.0, "big": 1e21})),
    (ADA_USER, DEVICE, "goal", {"id": "g-1", "title": "Scales", "status": "active", "target_value": 100.0}),
    # Deleted later (deleted_at in the old form; the deleted row keeps old piece ids too).
    (ADA_USER, DEVICE, "logbook_entry", entry("e-deleted", [{"id": "J.S. Bach-Prelude"}], duration=9)),
    # A repertoire item keyed by a raw scoreId: its key changes.
    (ADA_USER, DEVICE, "repertoire_item",
     {"id": "rep_1", "scoreId": "Nocturne Op. 9 No. 2-Chopin", "status": "learning",
      "updatedAt": "2025-06-01T18:30:12.345Z"}),
    (ADA_USER, DEVICE, "repertoire_item", {"id": "rep_2", "scoreId": "clair de lune-debussy", "status": "planned"}),
    (BEN_USER, DEVICE, "logbook_entry", entry("b-1", [{"id": "\u201cTr\u00e4umerei\u201d-R. Schumann"}])),
]  # fmt: skip
DELETIONS = [(ADA_USER, DEVICE, "logbook_entry", {"id": "e-deleted", "deletedAt": "2025-07-02T09:15:00.123Z"})]
TABLES = ("sync_data", "logbook_entries", "recovery_entity_state", "recovery_archive", "recovery_raw_records",
          "recovery_ledger", "recovery_quarantine", "sync_sequence")  # fmt: skip


async def recover(db: SqliteStorage) -> None:
    for user, device, entity_type, record in UPLOADS + DELETIONS:
        upload = Upload(owner=user.id, user=user, device_id=device, source="push",
                        records=[IncomingRecord(entity_type, json.dumps(record).encode())])
        assert isinstance(await ingest(db, upload, now_ms=NOW_MS), UploadResult)


async def database(path: Path, monkeypatch: pytest.MonkeyPatch | None) -> str:
    """A recovered database: by the earlier rules when `monkeypatch` is given, else by the current ones."""
    db = await SqliteStorage.open(path)
    try:
        add_users(db.path, ADA, BEN)
        if monkeypatch is None:
            await recover(db)
        else:
            with old_rules(monkeypatch):
                await recover(db)
    finally:
        await db.close()
    return str(path)


async def run(path: str, **options: Any) -> RenormaliseReport:
    db = await SqliteStorage.open(path)
    try:
        return await renormalise(db, now_ms=NOW_MS + 1000, **options)
    finally:
        await db.close()


def same_document(text: str, expected: str) -> bool:
    """The same JSON document, and `text` spelled as JSON.stringify spells it (1, not 1.0)."""
    decoded = jsontext.decode(text)
    return js_stringify(decoded) == text and canonical_json(decoded) == expected


def rows(path: str, sql: str) -> dict[tuple[str, ...], dict[str, Any]]:
    return {tuple(r[k] for k in r.keys()[:3]): dict(r) for r in query(path, sql)}


SYNC = "SELECT user_id, entity_type, entity_id, data, checksum, deleted_at, version, seq, device_id FROM sync_data"
LOGBOOK = "SELECT user_id, id, pieces, metadata, checksum, deleted_at, sync_version FROM logbook_entries"


def snapshot(path: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {t: sorted(map(tuple, conn.execute(f"SELECT * FROM {t}").fetchall()), key=repr) for t in TABLES}  # noqa: S608
    finally:
        conn.close()


@pytest.fixture
async def old_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return await database(tmp_path / "old.db", monkeypatch)


@pytest.fixture
async def fresh_db(tmp_path: Path) -> str:
    return await database(tmp_path / "fresh.db", None)


async def test_the_old_database_differs_as_the_issue_found(old_db: str, fresh_db: str) -> None:
    """The fixture is what the comparison with the app found: piece ids, number spelling, deleted_at."""
    old, fresh = rows(old_db, SYNC), rows(fresh_db, SYNC)
    assert old[(ADA[0], "logbook_entry", "e-periods")]["data"] != fresh[(ADA[0], "logbook_entry", "e-periods")]["data"]
    assert '"bpm":1.0' in old[(ADA[0], "logbook_entry", "e-numbers")]["data"]
    assert old[(ADA[0], "logbook_entry", "e-deleted")]["deleted_at"] == "2025-07-02 09:15:00"
    assert (ADA[0], "logbook_entry", "e-dup-b") not in old  # a content duplicate there, its own entry here
    assert (ADA[0], "repertoire_item", "Nocturne Op. 9 No. 2-Chopin") in old


async def test_renormalise_gives_the_rows_the_current_rules_store(old_db: str, fresh_db: str) -> None:
    before = rows(old_db, SYNC)
    report = await run(old_db)
    after, fresh = rows(old_db, SYNC), rows(fresh_db, SYNC)
    moved_from = (ADA[0], "repertoire_item", "Nocturne Op. 9 No. 2-Chopin")
    # Every row a fresh recovery stores is there, with the same document (spelled as the app spells it; key
    # order is free), checksum and deleted_at.
    for key, want in fresh.items():
        got = after[key]
        assert same_document(got["data"], want["data"]), key
        assert (got["checksum"], got["deleted_at"]) == (want["checksum"], want["deleted_at"]), key
        assert got["device_id"] == want["device_id"], key  # each row keeps the device it came from
    # The old repertoire key is soft-deleted, never deleted; nothing else is left over.
    assert set(after) - set(fresh) == {moved_from}
    assert after[moved_from]["deleted_at"] is not None
    assert set(before) <= set(after)
    # Changed rows got a new version and seq (live sync sees them); unchanged ones were not touched.
    for key, old in before.items():
        new = after[key]
        if (new["data"], new["deleted_at"]) == (old["data"], old["deleted_at"]) and key != moved_from:
            assert (new["version"], new["seq"]) == (old["version"], old["seq"]), key
        else:
            assert new["version"] == old["version"] + 1 and new["seq"] > max(r["seq"] for r in before.values()), key
    assert after[(ADA[0], "logbook_entry", "e-same")]["seq"] == before[(ADA[0], "logbook_entry", "e-same")]["seq"]
    # logbook_entries follows, for live and deleted rows.
    fresh_logbook = rows(fresh_db, LOGBOOK)
    for key, got in rows(old_db, LOGBOOK).items():
        want = fresh_logbook[key]
        assert (got["metadata"], got["checksum"], got["deleted_at"]) == (want["metadata"], want["checksum"],
                                                                         want["deleted_at"]), key
        if want["deleted_at"] is None:
            assert got["pieces"] == want["pieces"], key
    # What was overwritten is archived, once per rewritten document.
    archived = query(old_db, "SELECT entity_id, data FROM recovery_archive WHERE reason = ?", (ARCHIVE_REASON,))
    assert {(a["entity_id"], a["data"]) for a in archived} == {
        (key[2], old["data"]) for key, old in before.items()
        if key in after and after[key]["data"] != old["data"]
    }  # fmt: skip
    counts = report.by_entity_type
    assert counts["logbook_entry"].examined == 7 and counts["logbook_entry"].split == 1
    assert counts["logbook_entry"].changed == 5  # e-periods, e-dash, e-dup-a, e-numbers, e-deleted (b-1 too: Ben)
    assert counts["logbook_entry"].deleted_at_fixed == 1
    assert counts["repertoire_item"].moved == 1 and counts["repertoire_item"].changed == 0
    assert counts["goal"].changed == 1
    assert report.users == 2


async def test_a_second_run_changes_nothing(old_db: str) -> None:
    first = await run(old_db)
    assert first.rows_written > 0
    before = snapshot(old_db)
    second = await run(old_db)
    assert (second.rows_written, second.raw_checksums_updated) == (0, 0)
    assert all(c.changed == c.deleted_at_fixed == c.moved == c.split == 0 for c in second.by_entity_type.values())
    assert snapshot(old_db) == before


async def test_a_dry_run_reports_the_same_and_writes_nothing(old_db: str) -> None:
    before = snapshot(old_db)
    dry = await run(old_db, dry_run=True)
    assert snapshot(old_db) == before
    real = await run(old_db)
    assert dry.by_entity_type == real.by_entity_type
    assert (dry.rows_written, dry.raw_checksums_updated) == (real.rows_written, real.raw_checksums_updated)


async def test_after_renormalising_a_device_re_pushing_its_history_writes_nothing(old_db: str) -> None:
    await run(old_db)
    before = snapshot(old_db)
    db = await SqliteStorage.open(old_db)
    try:
        for user, device, entity_type, record in UPLOADS:
            upload = Upload(owner=user.id, user=user, device_id=device, source="push",
                            records=[IncomingRecord(entity_type, json.dumps(record).encode())])
            result = await ingest(db, upload, now_ms=NOW_MS + 2000)
            assert isinstance(result, UploadResult)
            outcomes = {r.outcome for r in result.receipt.results}
            assert outcomes <= {"duplicate", "content_duplicate", "suppressed"}, record["id"]  # suppressed: deleted
    finally:
        await db.close()
    after = snapshot(old_db)
    assert after["sync_data"] == before["sync_data"] and after["logbook_entries"] == before["logbook_entries"]


async def test_one_user_only(old_db: str) -> None:
    report = await run(old_db, user_id=BEN[0])
    assert report.users == 1
    assert report.by_entity_type["logbook_entry"].examined == 1
    assert query(old_db, "SELECT deleted_at FROM sync_data WHERE entity_id = 'e-deleted'")[0]["deleted_at"] == (
        "2025-07-02 09:15:00"
    )  # Ada's rows are not touched


def test_the_command(old_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["renormalise", "--db", old_db, "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True and report["rows_written"] > 0
    assert main(["renormalise", "--db", old_db]) == 0
    text = capsys.readouterr().out
    assert "rows changed:" in text and "logbook_entry:" in text
    assert main(["renormalise", "--db", old_db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_written"] == 0
    assert main(["renormalise", "--db", old_db + ".missing"]) == 2


async def test_rewritten_rows_are_announced_to_live_sockets(old_db: str) -> None:
    """A renormalised row has a new seq: each user's notice carries the counter after their rewrite, so an
    open socket is sent the rows in their new form (a dry run announces nothing)."""
    heard: list[tuple[str | None, int]] = []
    feed = LocalFeed()
    feed.subscribe(lambda user, seq: heard.append((user, seq)))
    db = await SqliteStorage.open(old_db)
    changefeed.attach(db, feed)
    try:
        await renormalise(db, now_ms=NOW_MS + 1000, dry_run=True)
        assert heard == []
        report = await renormalise(db, now_ms=NOW_MS + 1000)
    finally:
        changefeed.detach(db)
        await db.close()
    users = {r["user_id"] for r in query(old_db, "SELECT DISTINCT user_id FROM sync_data")}
    assert report.rows_written > 0 and {user for user, _ in heard} == users
    highest = query(old_db, "SELECT MAX(seq) AS s FROM sync_data")[0]["s"]
    assert max(seq for _, seq in heard) == highest
