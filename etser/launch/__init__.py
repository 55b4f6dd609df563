"""Stages 3 and 4 launched: the one planner (``plan``) writes every job file, the one runner (``run``) runs
a job's lines in one process, the launchers (``jobs``, behind utils/run.py and utils/slurm.py) start the jobs."""
