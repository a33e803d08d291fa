"""Demo assets shipped with patchbay (sample source systems for the product demo and tests)."""
