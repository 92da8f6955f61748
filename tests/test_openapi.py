"""`openapi/openapi.json` is exactly what the app generates: regenerate it with
`python -m service openapi` whenever a route or schema changes."""

from __future__ import annotations

from pathlib import Path

from service.openapi import render_openapi

COMMITTED = Path(__file__).parent.parent / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_code() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render_openapi(), (
        "openapi/openapi.json is stale: run `python -m service openapi`"
    )


def test_operations_are_documented_and_secured() -> None:
    import json

    schema = json.loads(render_openapi())
    assert "/api/sync/push" in schema["paths"]
    assert "/health" not in schema["paths"] and "/metrics" not in schema["paths"]
    push = schema["paths"]["/api/sync/push"]["post"]
    assert {p["name"] for p in push["parameters"]} >= {"X-Device-ID", "X-Idempotency-Key"}


def test_closed_sets_are_listed_as_enums() -> None:
    """Reasons and entity types are closed sets: the document lists their values wherever the API answers
    or takes them, so clients can tell every value there is."""
    import json

    from service.domain.accounts import AuthProvider, Role
    from service.domain.outcomes import MergeReason, Outcome
    from service.domain.progress import RecoveryState
    from service.domain.records import EntityType, QuarantineReason

    document = json.loads(render_openapi())
    schemas = document["components"]["schemas"]
    quarantine_reasons = [r.value for r in QuarantineReason]
    assert schemas["QuarantineReason"]["enum"] == quarantine_reasons
    assert schemas["QuarantinedRecord"]["properties"]["reason"] == {"$ref": "#/components/schemas/QuarantineReason"}
    merge_reasons = [r.value for r in MergeReason]
    assert schemas["RecordResult"]["properties"]["reason"]["enum"] == [*quarantine_reasons, *merge_reasons, None]
    outcomes = [o.value for o in Outcome]
    assert schemas["Conflict"]["properties"]["reason"]["enum"] == [*quarantine_reasons, *merge_reasons, *outcomes]
    entity_types = {"type": "string", "enum": [t.value for t in EntityType]}
    assert schemas["DeviceDeclaration"]["properties"]["expected"]["propertyNames"] == entity_types
    for counts in ("expected", "received"):
        assert schemas["DeviceCompletion"]["properties"][counts]["propertyNames"] == entity_types
    outcome_keys = {"type": "string", "enum": outcomes}
    for schema, counts in [("RecoveryUploadResponse", "counts"), ("RecoverySummary", "counts"),
                           ("LedgerEntry", "counts"), ("UserProgress", "counts"), ("Summary", "records_by_outcome")]:
        assert schemas[schema]["properties"][counts]["propertyNames"] == outcome_keys, schema
    states = [s.value for s in RecoveryState]
    assert schemas["Summary"]["properties"]["users_by_state"]["propertyNames"] == {"type": "string", "enum": states}
    assert schemas["Role"]["enum"] == [r.value for r in Role]
    assert schemas["UserProfile"]["properties"]["role"] == {"$ref": "#/components/schemas/Role"}
    assert schemas["AuthProvider"]["enum"] == [p.value for p in AuthProvider]
    users = document["paths"]["/v1/support/users"]["get"]["parameters"]
    state = next(p for p in users if p["name"] == "state")
    assert state["schema"]["enum"] == states
