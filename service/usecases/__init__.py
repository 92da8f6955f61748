"""The application layer: every use case once, called by every front end (HTTP controllers, the live-sync
socket, the replay, the CLI, the support page). A use case takes a `Storage` and domain values, runs
its transaction through the storage interface, and answers in domain terms; no front end holds a rule.
"""
