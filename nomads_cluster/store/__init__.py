"""The store: what the service remembers of each user (current assignment and history)
and the survey answers collected for training, on SQLite or PostgreSQL."""
