"""Engine state: runs, per-record outcomes, checkpoints, cursors, the outbox, aggregates.

One schema through SQLAlchemy Core: an SQLite file under `.patchbay/` by default, or
PostgreSQL when several workers or machines share the work. Repositories, one module each,
under one unit of work (`Store.transaction`); see store.py.
"""

from patchbay.store.runs import RunRecord
from patchbay.store.store import Store, Transaction, open_state

__all__ = ["RunRecord", "Store", "Transaction", "open_state"]
