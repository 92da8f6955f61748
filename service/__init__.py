"""Recovery service for the practice-logbook app's synced history."""
