"""The database: the app's schema, the service's own tables, and the one writer."""
