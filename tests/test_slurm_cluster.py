"""The dev cluster itself (slurm/): real array jobs through submitit, accounting, fake GPUs.

Jobs run stdlib functions (pickled by reference, importable in the job's interpreter).
"""

import operator
import os
import submitit

from conftest import wait_until


def test_an_array_runs_and_sacct_reports_it(slurm, tmp_path):
    ex = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    ex.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=0.25, slurm_array_parallelism=2)
    jobs = ex.map_array(operator.mul, range(4), range(4))
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1  # one sbatch
    assert [j.result() for j in jobs] == [0, 1, 4, 9]
    # Accounting lags completion by seconds (slurmctld reports to slurmdbd asynchronously).
    wait_until(lambda: [j.get_info(mode="force").get("State") for j in jobs]
               == ["COMPLETED"] * 4, "sacct to say COMPLETED four times")  # accounting works


def test_a_gpu_request_gets_one_fake_gpu(slurm, tmp_path):
    ex = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    ex.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=0.25, gpus_per_node=1)
    assert ex.submit(os.getenv, "CUDA_VISIBLE_DEVICES", "").result() in ("0", "1")
