"""Solve E1 on a laptop: daskie's embedded LocalCluster (2 worker processes on 127.0.0.1),
started and closed by daskie.cluster.make_cluster.

    python examples/laptop.py

The same as ``daskie solve E1 --cluster local --steps 30``; ``daskie.solve("E1")`` without a
client starts the same cluster itself.
"""

import daskie
from daskie import LevenbergMarquardt
from daskie.cluster import make_cluster

if __name__ == "__main__":  # worker processes re-import this file: start nothing on import
    with make_cluster("local", workers=2) as client:
        print(f"dashboard: {client.dashboard_link}")
        ds = daskie.solve("E1", optimizer=LevenbergMarquardt(steps=30), client=client)
    print(f"E1: MSE {ds.attrs['mse']:.2e}, relative L2 {ds.attrs['rel_l2']:.2e}, "
          f"{ds.attrs['epochs']} epochs, {ds.attrs['wall_s']:.1f} s")
