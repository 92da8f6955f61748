"""Every operation of `openapi/openapi.json`, fuzzed against the real server with an admin's token:
no 5xx, and every answer is in the spec (documented status code, content type, schema).

The database holds users with uploads, archived conflicts and quarantined records, and user ids in paths
are often ones that exist, so support routes answer with real bodies (200), not only 404s. Generation is
derandomized and bounded (examples per operation, no Hypothesis database): the same cases every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADA, ADMIN, BEN, add_users, auth, load_fixture, token_for
from tests.reliability.liveserver import ROOT, ServerProcess, live_server

SPEC = ROOT / "openapi" / "openapi.json"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 50
# Per example; generous for a loaded CI machine, but a hung request fails instead of stalling the run.
DEADLINE = timedelta(seconds=10)
LATECOMER = ("user_LateLateLateLateLate0", "late@example.com", "user")  # uploads before the user exists
KNOWN_USER_IDS = [ADA[0], BEN[0], ADMIN[0], LATECOMER[0]]
DEVICE = "dev_a1B2c3D4e5F6g7H8"

schema = schemathesis.openapi.from_path(SPEC)


@schema.hook("flatmap_path_parameters")
def known_user_ids(context: schemathesis.HookContext, path_parameters: dict[str, Any]) -> Any:
    """A user id in a path is a user with recovery data as often as a generated one."""
    if not path_parameters or "user_id" not in path_parameters:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters),
                     st.sampled_from(KNOWN_USER_IDS).map(lambda uid: {**path_parameters, "user_id": uid}))


def seed(base_url: str) -> None:
    """Uploads that give every support view something to show: progress, ledger, archive, quarantine."""
    export = load_fixture("exports/mirubato-data-export-2025-11-30.json")
    entry = export["logbook"][0]
    pushes: list[tuple[tuple[str, str, str], dict[str, Any]]] = [
        (ADA, {"entries": export["logbook"], "goals": export["goals"]}),
        (ADA, {"entries": [{**entry, "notes": "older copy", "updatedAt": "2025-01-01T00:00:00.000Z"}]}),
        (BEN, {"entries": [{**entry, "id": "ben-negative", "duration": -5}]}),
        (LATECOMER, {"entries": export["logbook"][:3]}),
    ]
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for user, changes in pushes:
            response = client.post("/api/sync/push", json={"changes": changes},
                                   headers=auth(user, **{"X-Device-ID": DEVICE}))
            assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = Path(tmp_path_factory.mktemp("schemathesis")) / "app.db"
    with live_server(db) as running:
        add_users(running.db_path, ADA, BEN, ADMIN)
        seed(running.base_url)
        yield running


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=DEADLINE, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_and_no_5xx(case: schemathesis.Case[Any], live: ServerProcess,
                                                 session: requests.Session) -> None:
    """Whatever schemathesis sends (valid and invalid cases), the answer is a documented status with the
    documented content type and schema, and never a server error."""
    case.call_and_validate(
        base_url=live.base_url, session=session, headers={"Authorization": f"Bearer {token_for(ADMIN)}"},
        checks=CHECKS, timeout=10,
    )
