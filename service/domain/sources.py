"""Where an upload came from: the ledger's `source` (the OpenAPI document lists them)."""

from __future__ import annotations

from enum import StrEnum


class Source(StrEnum):
    PUSH = "push"  # the app's POST /api/sync/push
    RECOVERY = "recovery"  # the native POST /v1/recovery/uploads
    EXPORT = "export"  # an export file, over HTTP
    REPLAY = "replay"  # an exported file, by `replay`
    REDRIVE = "redrive"  # quarantined records taken through again
    SOCKET = "socket"  # the live-sync socket
    REPERTOIRE = "repertoire"  # the app's repertoire routes
    PREFERENCES = "preferences"  # the app's preferences route
