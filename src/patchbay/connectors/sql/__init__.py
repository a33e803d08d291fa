"""SQL databases: SQLite, PostgreSQL, MySQL/MariaDB.

`connector` is the connector; `arrow` its columnar reads through ADBC; `pgcopy` the
PostgreSQL COPY writer; `changes` the watermark cursor of `changes()`; `types` the column
type and error code maps; `pgcapture` PostgreSQL's trigger-based change capture,
`mycapture` MySQL's and MariaDB's, `capture` what they share; and `pgtables` the binary
COPY encoding of Arrow tables.
"""

from patchbay.connectors.sql.connector import SqlConnector

__all__ = ["SqlConnector"]
