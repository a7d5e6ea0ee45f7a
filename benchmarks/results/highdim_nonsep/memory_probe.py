# Issue 30 item 3: peak RSS of discretize, one residual and one Jacobian of the daskie
# discretization (no solve). Usage, from the repository root:
#   /usr/bin/time -v python benchmarks/results/highdim_nonsep/memory_probe.py FAMILY D jac LEVEL BLOCK_MB|none
import sys, time, os, resource, threading
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, "/work/main/benchmarks")
from daskie.problems import catalog
from highdim import daskie_formulation, PeakRSS
from daskie.train.objective import Objective
fam, d, stage = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kw = dict(level=int(sys.argv[4])) if fam.endswith("fredholm") else dict(local_level=int(sys.argv[4]))
prob = catalog.get(f"{fam}-d{d}")
import dataclasses
form = daskie_formulation(prob, [16,16,16], **kw)
bm = None if sys.argv[5] == "none" else float(sys.argv[5])
form = dataclasses.replace(form, block_mb=bm)
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024
with PeakRSS() as m:
    t=time.perf_counter(); disc = form.discretize(prob); t1=time.perf_counter()-t
print("discretize", t1, "s peak", m.peak_mb, "base", m.base_mb, disc.info["node_evaluations"], disc.info["points"], flush=True)
if stage == "disc": sys.exit()
obj = Objective(disc); th = obj.init_params(0)
with PeakRSS() as m:
    t=time.perf_counter(); r = obj.residuals(th); t1=time.perf_counter()-t
print("residual", t1, "s peak", m.peak_mb, flush=True)
with PeakRSS() as m:
    t=time.perf_counter(); r, J = obj.jacobian(th); t1=time.perf_counter()-t
print("jacobian", t1, "s peak", m.peak_mb, J.shape, flush=True)
