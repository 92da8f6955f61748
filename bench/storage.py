"""What storage a recovery needs per record, and where it goes: replay N benchmark entries into a fresh
app database, checkpoint the WAL, and report the bytes each table (with its indexes) takes per record,
measured with SQLite's dbstat (the pages each b-tree uses).

    python bench/storage.py [--entries 50000] [--users 50]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, create_app_db
from workload import make_users, write_ndjson


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resync-storage-") as scratch:
        work = Path(scratch)
        users = make_users(args.users)
        source = write_ndjson(work / "replay.ndjson", users, args.entries, "storage")
        input_bytes = source.path.stat().st_size
        db = work / "app.db"
        create_app_db(db, users)
        subprocess.run([sys.executable, "-m", "service", "replay", "--db", str(db), "--json", str(source.path)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        table_bytes: dict[str, int] = defaultdict(int)
        index_bytes: dict[str, int] = defaultdict(int)
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            (table_bytes if name == table else index_bytes)[table] += size
        file_bytes = db.stat().st_size
        conn.close()
    records = source.entries
    print(f"{records:,} entries replayed: NDJSON input {input_bytes / records:,.0f} bytes per entry, database "
          f"{file_bytes / 1e6:,.1f} MB = {file_bytes / records:,.0f} bytes per entry "
          f"({file_bytes / input_bytes:.1f}x the input)")
    print(f"{'table':32} {'rows+indexes B/entry':>22} {'of which indexes':>17}")
    for table in sorted(table_bytes, key=lambda t: -(table_bytes[t] + index_bytes[t])):
        total = table_bytes[table] + index_bytes[table]
        if total / records >= 1:
            print(f"{table:32} {total / records:22,.0f} {index_bytes[table] / records:17,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
