"""Settings, from the environment (and the command line, which overrides it)."""

from __future__ import annotations

import os

import msgspec

DEFAULT_DB_PATH = "./data/app.db"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_KEEP_ALIVE_S = 5
DEFAULT_MAX_CONNECTIONS = 1000


class ServerLimits(msgspec.Struct, frozen=True):
    """What the HTTP server allows before any authentication (enforced by service/http_server.py)."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    keep_alive_s: int = DEFAULT_KEEP_ALIVE_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def from_env(cls) -> ServerLimits:
        def number(name: str, default: float) -> float:
            value = os.environ.get(name)
            return float(value) if value else default

        return cls(
            max_header_bytes=int(number("RESYNC_MAX_HEADER_KB", DEFAULT_MAX_HEADER_BYTES / 1024) * 1024),
            header_timeout_s=number("RESYNC_HEADER_TIMEOUT_S", DEFAULT_HEADER_TIMEOUT_S),
            body_timeout_s=number("RESYNC_BODY_TIMEOUT_S", DEFAULT_BODY_TIMEOUT_S),
            keep_alive_s=int(number("RESYNC_KEEP_ALIVE_S", DEFAULT_KEEP_ALIVE_S)),
            max_connections=int(number("RESYNC_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)),
        )

    def to_env(self) -> dict[str, str]:
        """The same limits as environment variables (for worker processes, which read them at import)."""
        return {
            "RESYNC_MAX_HEADER_KB": str(self.max_header_bytes / 1024),
            "RESYNC_HEADER_TIMEOUT_S": str(self.header_timeout_s),
            "RESYNC_BODY_TIMEOUT_S": str(self.body_timeout_s),
            "RESYNC_KEEP_ALIVE_S": str(self.keep_alive_s),
            "RESYNC_MAX_CONNECTIONS": str(self.max_connections),
        }


class Settings(msgspec.Struct, frozen=True):
    db_path: str = DEFAULT_DB_PATH
    # A `postgresql://` URL (RESYNC_DATABASE_URL): the engine it names instead of the SQLite file.
    database_url: str | None = None
    jwt_secret: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Origins whose browsers may call the sync endpoints with credentials (the app's own origin).
    cors_origins: tuple[str, ...] = ()
    # Header size and read timeouts of the HTTP server, before any authentication (service/http_server.py).
    server_limits: ServerLimits = ServerLimits()

    @classmethod
    def from_env(cls) -> Settings:
        origins = tuple(o.strip() for o in os.environ.get("RESYNC_CORS_ORIGINS", "").split(",") if o.strip())
        max_body_mb = os.environ.get("RESYNC_MAX_BODY_MB")
        return cls(
            db_path=os.environ.get("RESYNC_DB", DEFAULT_DB_PATH),
            database_url=os.environ.get("RESYNC_DATABASE_URL") or None,
            jwt_secret=os.environ.get("RESYNC_JWT_SECRET", ""),
            max_body_bytes=int(float(max_body_mb) * 1024 * 1024) if max_body_mb else DEFAULT_MAX_BODY_BYTES,
            cors_origins=origins,
            server_limits=ServerLimits.from_env(),
        )
