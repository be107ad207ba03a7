"""The write side: what happens between ``Experiment.log()`` and the files.

Stages, each owning its state, in the order a row meets them:

* ``_options``: the Experiment's settings, one frozen value validated once;
* ``_run_folder``: the one owner of the version folder (claim, lock, recover, metadata);
* ``_rows`` and ``_fastpath``: the table of accepted scalars, the packed row
  format and the generated ``log()`` that writes it;
* ``_ring``: the memory-mapped queue, the one object both threads touch;
* ``_writer``: the thread that takes rows off the ring into the journal and hands
  them to its sinks (``_sinks``: CSV and Parquet; ``_tensorboard``; ``_media``: images);
* ``_exit``: the final flush at interpreter exit, on signals and after a fork.
"""
