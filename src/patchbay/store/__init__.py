"""Engine state: runs, per-record outcomes, checkpoints, cursors.

One schema through SQLAlchemy Core: an SQLite file under `.patchbay/` by default, or
PostgreSQL when several workers or machines share the work.
"""

from patchbay.store.store import RunRecord, Store

__all__ = ["RunRecord", "Store"]
