"""`known_raw_records`, the repeat lookup before normalising, on every engine: it finds the checksum each
kept raw record normalised to, for every candidate (a key named twice, with two contents, included), and
whether the device asking sent it; nothing for a user who has no raw record kept yet."""

from __future__ import annotations

import msgspec

from service.domain.owners import UserRecord
from service.store import Storage
from service.store.rows import KnownRaw
from service.usecases.ingest import IncomingRecord, Upload, UploadResult, ingest, sha256_hex
from tests.conftest import ADA, BEN, add_users, query, target

ADA_USER = UserRecord(ADA[0], ADA[1], "user")
PHONE = "dev_phonephonephone1"


def _goal(title: str, updated: str) -> bytes:
    return msgspec.json.encode({"id": "g1", "title": title, "updatedAt": updated})


async def test_every_candidate_is_looked_up_and_a_new_user_finds_nothing(storage: Storage) -> None:
    add_users(target(storage), ADA, BEN)
    first, second = _goal("Scales", "2025-06-01T00:00:00.000Z"), _goal("Arpeggios", "2025-06-02T00:00:00.000Z")
    for raw, device in ((first, PHONE), (second, None)):
        upload = Upload(owner=ADA[0], user=ADA_USER, device_id=device, source="push",
                        records=[IncomingRecord("goal", raw)])
        assert isinstance(await ingest(storage, upload), UploadResult)
    kept = {r["raw_sha256"]: r["checksum"] for r in query(
        target(storage), "SELECT raw_sha256, checksum FROM recovery_raw_records WHERE user_id = ?", (ADA[0],))}
    candidates = [("goal", "g1", sha256_hex(first)), ("goal", "g1", sha256_hex(second)), ("goal", "g2", "0" * 64)]
    found = await storage.read(lambda unit: unit.known_raw_records(ADA[0], PHONE, candidates))
    assert found == {candidates[0]: KnownRaw(kept[candidates[0][2]], from_device=True),
                     candidates[1]: KnownRaw(kept[candidates[1][2]], from_device=False)}
    assert len({k.checksum for k in found.values()}) == 2
    # Asked without a device (or by another), no raw record is the asker's.
    for asker in (None, "dev_someoneelse0000"):
        found = await storage.read(lambda unit, asker=asker: unit.known_raw_records(ADA[0], asker, candidates))
        assert [k.from_device for k in found.values()] == [False, False]
    assert await storage.read(lambda unit: unit.known_raw_records(BEN[0], PHONE, candidates)) == {}
