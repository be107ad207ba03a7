"""The read side, and the on-disk formats it shares with the writer.

The run folder's names (``_layout``), the journal's frames (``_journal``), the
tables' shape (``_schema``), where a save_dir is (``_location``: a path or a
URI), the read layer over any ``pyarrow.fs.FileSystem`` (``_reader``: the run
folders under a save_dir and one run's files) and the readers built on it:
``read()`` (``_read``), ``runs()`` (``_runs``), damage repair (``_recovery``)
and the rows a dead process left in its ring (``_ring_recovery``).
"""
