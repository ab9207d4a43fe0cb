"""Run results on disk: JSONL + SQLite, import/export."""
