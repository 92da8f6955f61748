"""The message types of the app's live-sync socket (CONTRACT section 4), as its sync worker spells them."""

from __future__ import annotations

from enum import StrEnum


class SyncEventType(StrEnum):
    """Every `type` the socket sends or takes. What a client sends is read as text first: a type not
    listed here is answered with `ERROR` (as the app's worker does), never refused by a decoder."""

    # changes, both ways
    ENTRY_CREATED = "ENTRY_CREATED"
    ENTRY_UPDATED = "ENTRY_UPDATED"
    ENTRY_DELETED = "ENTRY_DELETED"
    PIECE_ADDED = "PIECE_ADDED"
    PIECE_UPDATED = "PIECE_UPDATED"
    PIECE_REMOVED = "PIECE_REMOVED"
    PIECE_DISSOCIATED = "PIECE_DISSOCIATED"
    PLAN_CREATED = "PLAN_CREATED"
    PLAN_UPDATED = "PLAN_UPDATED"
    PLAN_OCCURRENCE_COMPLETED = "PLAN_OCCURRENCE_COMPLETED"
    BULK_SYNC = "BULK_SYNC"
    REPERTOIRE_BULK_SYNC = "REPERTOIRE_BULK_SYNC"
    # the conversation
    PING = "PING"
    PONG = "PONG"
    SYNC_REQUEST = "SYNC_REQUEST"
    SYNC_RESPONSE = "SYNC_RESPONSE"
    WELCOME = "WELCOME"
    ERROR = "ERROR"
