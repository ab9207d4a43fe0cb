"""The same sweep over a Ray cluster (optional extra `edgeeval[ray]`; Ray is imported lazily)."""
