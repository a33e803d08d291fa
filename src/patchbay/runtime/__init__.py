"""Runtime: running integrations (now: on demand; later: scheduler, triggers, workers)."""
