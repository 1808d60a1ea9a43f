"""The lake's tables as the command line reads them, given to it by the service (it imports the
service, never ``graywave.storage``): the lake that its queries are asked of (``Backends.lake``),
a commit as its history lists it, and the tables' names. It imports Delta Lake: the command line
imports it in the commands that read the lake (or for types only), not at start-up.
"""

from __future__ import annotations

from graywave.storage.lake import TABLES, Commit, Lake, Table, check_table

__all__ = ["TABLES", "Commit", "Lake", "Table", "check_table"]
