"""Hyperparameter search: the search space, the trial pool and Slurm job scripts.

The public entry points stay where test-tube 0.7.5 had them:
``test_tube.argparse_hopt``, ``test_tube.hpc`` and
``test_tube.hyper_opt_utils.strategies``.
"""
