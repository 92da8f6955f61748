"""The incident, end to end: an app database with history is wiped the way the migration wiped it
(copy users, DROP TABLE users with foreign keys on, rename), the devices push their copies again, and
every entry is back with its original checksum, nothing stored twice."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.domain.normalise import normalise
from service.domain.records import Normalised
from service.store.sqlite.schema import APP_SCHEMA
from tests.conftest import ADA, BEN, SECRET, auth, load_fixture, query

NOW_MS = 1_800_000_000_000


def device_copies() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """What each user's devices hold: (entity_type, record) per device."""
    export = load_fixture("exports/mirubato-data-export-2025-11-30.json")
    dump = load_fixture("exports/localstorage-dump-dev_a1B2c3D4e5F6g7H8.json")
    report = load_fixture("exports/mirubato-practice-report-2025-08-15.json")
    ada_laptop = [("logbook_entry", e) for e in export["logbook"]] + [("goal", g) for g in export["goals"]]
    ada_browser = [("logbook_entry", e) for e in json.loads(dump["mirubato:logbook:entries"])]
    ben_phone = [("logbook_entry", {**e, "id": f"ben-{e['id']}"}) for e in report]
    return {"dev_adaLaptop00000001": ada_laptop, "dev_adaBrowser0000001": ada_browser,
            "dev_benPhone000000001": ben_phone}


def owner_of(device: str) -> tuple[str, str, str]:
    return BEN if device.startswith("dev_ben") else ADA


def build_app_database(path: Path) -> dict[tuple[str, str, str], str]:
    """The app database before the incident: users and their synced history, as the app stored it."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript(APP_SCHEMA)
    conn.executemany("INSERT INTO users (id, email, role) VALUES (?, ?, 'user')", [ADA[:2], BEN[:2]])
    checksums: dict[tuple[str, str, str], str] = {}
    seq = 0
    for device, records in device_copies().items():
        user = owner_of(device)
        for entity_type, record in records:
            n = normalise(entity_type, record, user[0], now_ms=NOW_MS)
            assert isinstance(n, Normalised)
            key = (user[0], entity_type, n.entity_id)
            if key in checksums:
                continue
            seq += 1
            checksums[key] = n.checksum
            conn.execute(
                "INSERT INTO sync_data (id, user_id, entity_type, entity_id, data, checksum, device_id, seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (f"sync_{seq}", user[0], entity_type, n.entity_id, n.text, n.checksum, device, seq),
            )
    conn.execute("UPDATE sync_sequence SET current_value = ?", (seq,))
    conn.commit()
    conn.close()
    return checksums


def run_the_incident_migration(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript(
        """
        BEGIN;
        CREATE TABLE users_new (
          id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, display_name TEXT,
          primary_instrument TEXT DEFAULT 'piano', created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
          updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
          auth_provider TEXT DEFAULT 'magic_link' CHECK (auth_provider IN ('magic_link', 'google')),
          google_id TEXT, last_login_at TIMESTAMP, login_count INTEGER DEFAULT 0,
          role TEXT DEFAULT 'user' CHECK (role IN ('user', 'teacher', 'admin'))
        );
        INSERT INTO users_new SELECT * FROM users;
        DROP TABLE users;
        ALTER TABLE users_new RENAME TO users;
        COMMIT;
        """
    )
    conn.close()


async def test_devices_bring_the_wiped_history_back(tmp_path: Path) -> None:
    db_file = tmp_path / "app.db"
    original = build_app_database(db_file)
    run_the_incident_migration(db_file)
    assert query(str(db_file), "SELECT COUNT(*) AS n FROM sync_data")[0]["n"] == 0
    assert query(str(db_file), "SELECT COUNT(*) AS n FROM users")[0]["n"] == 2

    app = create_app(Settings(db_path=str(db_file), jwt_secret=SECRET))
    async with AsyncTestClient(app=app) as client:
        for _ in range(2):  # devices retry: the second round must change nothing
            for device, records in device_copies().items():
                changes: dict[str, list[Any]] = {"entries": [], "goals": []}
                for entity_type, record in records:
                    changes["entries" if entity_type == "logbook_entry" else "goals"].append(record)
                response = await client.post(
                    "/api/sync/push", json={"changes": changes},
                    headers=auth(owner_of(device), **{"X-Device-ID": device}),
                )
                assert response.status_code == 200, response.text

    rows = query(str(db_file), "SELECT user_id, entity_type, entity_id, checksum FROM sync_data")
    recovered = {(r["user_id"], r["entity_type"], r["entity_id"]): r["checksum"] for r in rows}
    assert len(rows) == len(recovered)  # nothing stored twice
    # The old browser holds the same sessions under older ids: those are kept once, the other id
    # recorded as its content duplicate.
    duplicates = {
        (r["user_id"], r["entity_type"], r["entity_id"]): r["duplicate_of"]
        for r in query(str(db_file), "SELECT * FROM recovery_entity_state WHERE duplicate_of IS NOT NULL")
    }
    assert len(duplicates) == 2
    for key, checksum in original.items():
        if key in duplicates:
            assert (key[0], key[1], duplicates[key]) in recovered
        else:
            assert recovered.get(key) == checksum, key
    assert set(recovered) | set(duplicates) == set(original)
    logbook = query(str(db_file), "SELECT COUNT(*) AS n FROM logbook_entries")[0]["n"]
    assert logbook == sum(1 for k in recovered if k[1] == "logbook_entry")
