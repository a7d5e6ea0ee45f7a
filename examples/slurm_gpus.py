"""Solve E1 with CEPTF on a SLURM queue through dask-jobqueue, one worker on a GPU node.

    python examples/slurm_gpus.py                    # on a cluster's login node
    # or against the single-node test SLURM on this machine:
    dir=$(scripts/slurm/up.sh | tail -1) && SLURM_CONF=$dir/slurm.conf DASKIE_EXAMPLE_LOOPBACK=1 \
        python examples/slurm_gpus.py; scripts/slurm/down.sh "$dir"

Job settings (partition, account, walltime, memory, interface, extra #SBATCH lines) come from
your dask-jobqueue configuration (``~/.config/dask/jobqueue.yaml``, section ``jobqueue.slurm``)
exactly as for any SLURMCluster; daskie adds one worker process per job and the resource tags:
every worker declares ``CPU=<cores>``, and the GPU workers also ``GPU=1`` in jobs that ask
SLURM for ``--gres=gpu:1`` (setting ``daskie.cluster.gpu-directives``). The Plan is made with
``gpus=1``, so its heaviest group is tagged GPU and runs on the GPU worker.
"""

import os

import daskie
from daskie import CEPTF, MLP, Adam, OrderReduction
from daskie.cluster import make_cluster

if __name__ == "__main__":
    formulation = OrderReduction(net=MLP(hidden=(16, 16)), points=256, aux_points=256)
    plan = daskie.make_plan(formulation.discretize(daskie.catalog.get("E1")), workers=3, gpus=1)
    print(plan.describe())
    # The test SLURM runs everything on 127.0.0.1: Dask must advertise the loopback interface,
    # and a fixed dashboard port could clash with another scheduler on the machine.
    local = {"interface": "lo", "scheduler_options": {"dashboard_address": ":0"},
             "log_directory": os.path.join(os.environ.get("TMPDIR", "/tmp"), "daskie-slurm-logs")} \
        if os.environ.get("DASKIE_EXAMPLE_LOOPBACK") else {}
    # workers and GPU workers from the plan: N_sub workers, one per GPU-tagged group
    with make_cluster("slurm", plan=plan, timeout=300, **local) as client:
        for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
            print(f"  worker {info['name']} at {address}: resources {info['resources']}")
        ds = daskie.solve("E1", formulation=formulation, strategy=CEPTF(window=50),
                          optimizer=Adam(steps=200), client=client, workers=plan.workers,
                          gpus=plan.gpus)
    print(f"E1 on SLURM: MSE {ds.attrs['mse']:.2e}, {ds.attrs['epochs']} epochs, "
          f"{ds.attrs['wall_s']:.1f} s")
