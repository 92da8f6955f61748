"""`known_checksums`, the repeat lookup before normalising, on every engine: it finds the checksum each
kept raw record normalised to, for every candidate (a key named twice, with two contents, included), and
nothing for a user who has no raw record kept yet."""

from __future__ import annotations

import msgspec

from service.domain.owners import UserRecord
from service.store import Storage
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest, sha256_hex
from tests.conftest import ADA, BEN, add_users, query, target

ADA_USER = UserRecord(ADA[0], ADA[1], "user")


def _goal(title: str, updated: str) -> bytes:
    return msgspec.json.encode({"id": "g1", "title": title, "updatedAt": updated})


async def test_every_candidate_is_looked_up_and_a_new_user_finds_nothing(storage: Storage) -> None:
    add_users(target(storage), ADA, BEN)
    first, second = _goal("Scales", "2025-06-01T00:00:00.000Z"), _goal("Arpeggios", "2025-06-02T00:00:00.000Z")
    for raw in (first, second):
        upload = Upload(owner=ADA[0], user=ADA_USER, device_id=None, source="push",
                        records=[IncomingRecord("goal", raw)])
        assert isinstance(await ingest(storage, upload), UploadResult)
    kept = {r["raw_sha256"]: r["checksum"] for r in query(
        target(storage), "SELECT raw_sha256, checksum FROM recovery_raw_records WHERE user_id = ?", (ADA[0],))}
    candidates = [("goal", "g1", sha256_hex(first)), ("goal", "g1", sha256_hex(second)), ("goal", "g2", "0" * 64)]
    found = await storage.read(lambda unit: unit.known_checksums(ADA[0], candidates))
    assert found == {c: kept[c[2]] for c in candidates[:2]} and len(set(found.values())) == 2
    assert await storage.read(lambda unit: unit.known_checksums(BEN[0], candidates)) == {}
