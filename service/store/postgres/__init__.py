"""The PostgreSQL engine (`RESYNC_DATABASE_URL=postgresql://...`): `PostgresStorage` in engine.py, its units in
unit.py, the app's schema for their owner and the service role's grants in setup.py, the service's own
tables by numbered migrations in migrations/ (migrate.py)."""

from service.store.postgres.engine import PostgresStorage, UnsafeRole

__all__ = ["PostgresStorage", "UnsafeRole"]
