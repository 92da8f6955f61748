"""Prometheus metrics: label values come from closed sets, never from what a device made up."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import metrics
from service.domain.outcomes import QUARANTINED, Receipt, RecordResult
from service.domain.records import LOGBOOK_ENTRY, UNKNOWN_ENTITY_TYPE
from service.domain.sources import Source
from tests.conftest import ADA, add_users, auth
from tests.reliability.liveserver import live_server


def _records(entity_type: str) -> float:
    labels = {"outcome": QUARANTINED, "entity_type": entity_type}
    return metrics.REGISTRY.get_sample_value("resync_records_total", labels) or 0.0


def test_an_unknown_entity_type_is_counted_under_one_label() -> None:
    made_up = [f"made-up-type-{i}" for i in range(3)]
    receipt = Receipt([RecordResult(name, "id", QUARANTINED, UNKNOWN_ENTITY_TYPE) for name in made_up]
                      + [RecordResult(LOGBOOK_ENTRY, "e1", QUARANTINED, UNKNOWN_ENTITY_TYPE)])
    unknown, known = _records(metrics.UNKNOWN_ENTITY_TYPE), _records(LOGBOOK_ENTRY)
    metrics.observe_upload(Source.RECOVERY, receipt, 0.01)
    assert (_records(metrics.UNKNOWN_ENTITY_TYPE), _records(LOGBOOK_ENTRY)) == (unknown + 3, known + 1)
    assert all(_records(name) == 0.0 for name in made_up)


def test_each_multiprocess_run_gets_a_fresh_directory_removed_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(metrics.MULTIPROCESS_DIR_ENV, raising=False)
    with metrics.multiprocess_directory() as first:
        assert os.environ[metrics.MULTIPROCESS_DIR_ENV] == first and os.listdir(first) == []
        Path(first, "counter_1.db").write_bytes(b"")  # a worker's counts
    with metrics.multiprocess_directory() as second:
        assert os.listdir(second) == []
    assert metrics.MULTIPROCESS_DIR_ENV not in os.environ and list(tmp_path.iterdir()) == []


def _uploads_counted(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", headers={"Connection": "close"}, timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "resync_uploads_total" and sample.labels == {"source": Source.RECOVERY})


async def _upload(client: httpx.AsyncClient, gate: asyncio.Semaphore, n: int) -> None:
    body = {"records": [{"entity_type": "goal", "data": {"id": f"g-{n}", "title": f"goal {n}"}}]}
    async with gate:
        response = await client.post("/v1/recovery/uploads", json=body, headers=auth(ADA))
    assert response.status_code == 200, response.text


@pytest.mark.slow
async def test_a_scrape_of_two_worker_processes_counts_the_uploads_of_both(tmp_path: Path) -> None:
    """`serve --workers 2`: whichever process answers the scrape, it counts every upload, its own and the
    other's (each process writes its counts to a file named by its pid in the run's directory)."""
    temp = tmp_path / "tmp"  # the server's TMPDIR: where the run's metrics directory is made
    temp.mkdir()
    with live_server(tmp_path / "app.db", env={"TMPDIR": str(temp)}, args=["--workers", "2"]) as server:
        add_users(server.db_path, ADA)
        # No keep-alive: each upload a new connection, which either process may accept.
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30,
                                     limits=httpx.Limits(max_keepalive_connections=0)) as client:
            gate, sent = asyncio.Semaphore(8), 0
            while sent < 400:
                await asyncio.gather(*(_upload(client, gate, sent + i) for i in range(40)))
                sent += 40
                if len(list(temp.glob("resync-metrics-*/counter_*.db"))) >= 2:
                    break
        assert len(list(temp.glob("resync-metrics-*/counter_*.db"))) == 2, "both processes took uploads"
        for _ in range(6):  # scrapes on new connections: both processes answer some
            assert _uploads_counted(server.base_url) == sent
    assert list(temp.iterdir()) == []  # the run's directory went with it
