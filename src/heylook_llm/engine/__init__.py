"""Who runs what, when: the router (LRU, loading) and the per-model worker threads."""
