"""Where the registry, the cluster's nodes and their leases are stored: SQLite (embedded,
the default) or PostgreSQL (a cluster), behind one small interface (`Database`).

Every call is one transaction run in a worker thread (`trio.to_thread`): the work is a
plain function of a `Tx`, committed when it returns and rolled back when it raises, so a
failed request never leaves half a change behind. A database that cannot be reached is
StorageError (503), never fatal: the next call tries again.
"""

from .base import Database, Dialect, StorageError, Tx
from .open import open_database

__all__ = ["Database", "Dialect", "StorageError", "Tx", "open_database"]
