"""Running a grid: everything from ``submit`` to the shards, split by where the code runs and by
backend, as submitit splits its executors.

Where the user types: ``commands`` (run, submit, continue; a :class:`~seedgrid.grid.commands.Request`
is what submit is asked), ``cells`` (which cells train, in which tasks, and the checks before
anything is written), ``jobs`` (a submission through submitit, recorded in jobs.json),
``status`` (where a run stands, and waiting for it), ``early_stop`` (the --early-stop plan and
its decision), ``profile`` (cluster profiles).
The backends: ``local`` (this machine) and ``slurm`` (every sbatch, scontrol and sacct call).
On a compute node: ``worker`` only (an array task, a pack, the one function that trains cells).
"""
