"""The read side, and the on-disk formats it shares with the writer.

The run folder's names (``_layout``), the journal's frames (``_journal``), the
tables' shape (``_schema``) and the readers built on them: ``read()``
(``_read``), ``runs()`` (``_runs``), damage repair (``_recovery``) and the rows
a dead process left in its ring (``_ring_recovery``).
"""
