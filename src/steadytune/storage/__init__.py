"""Storage: the one stateful piece, a SQLite or PostgreSQL store, behind one interface."""
