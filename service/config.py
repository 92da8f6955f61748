"""Settings, from the environment (and the command line, which overrides it)."""

from __future__ import annotations

import os

import msgspec

DEFAULT_DB_PATH = "./data/app.db"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


class Settings(msgspec.Struct, frozen=True):
    db_path: str = DEFAULT_DB_PATH
    jwt_secret: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Origins whose browsers may call the sync endpoints with credentials (the app's own origin).
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> Settings:
        origins = tuple(o.strip() for o in os.environ.get("RESYNC_CORS_ORIGINS", "").split(",") if o.strip())
        max_body_mb = os.environ.get("RESYNC_MAX_BODY_MB")
        return cls(
            db_path=os.environ.get("RESYNC_DB", DEFAULT_DB_PATH),
            jwt_secret=os.environ.get("RESYNC_JWT_SECRET", ""),
            max_body_bytes=int(float(max_body_mb) * 1024 * 1024) if max_body_mb else DEFAULT_MAX_BODY_BYTES,
            cors_origins=origins,
        )
