# Issue 30 item 3: a whole daskie.solve with a few LM steps, the resident set printed every 5 s
# and every thread's stack every 25 s (faulthandler). Usage, from the repository root:
#   python benchmarks/results/highdim_nonsep/memory_probe_solve.py FAMILY D LEVEL STEPS
import sys, time, os, threading
import numpy as np, torch
sys.path.insert(0, "/work/main/benchmarks")
from daskie.problems import catalog
from daskie import solve, LevenbergMarquardt
from highdim import daskie_formulation, PeakRSS
fam, d, lvl, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
kw = dict(level=lvl) if fam.endswith("fredholm") else dict(local_level=lvl)
prob = catalog.get(f"{fam}-d{d}")
form = daskie_formulation(prob, [16,16,16], **kw)
import faulthandler; faulthandler.dump_traceback_later(25, repeat=True)
stop = threading.Event()
def watch():
    t0=time.time()
    while not stop.wait(5):
        with open("/proc/self/statm") as fh: r=int(fh.read().split()[1])*4096/2**20
        print(f"  t={time.time()-t0:.0f}s rss={r:.0f}MB", flush=True)
threading.Thread(target=watch, daemon=True).start()
with PeakRSS() as m:
    t=time.perf_counter()
    ds = solve(prob, form, optimizer=LevenbergMarquardt(steps=steps), client="sync", threads=1, target_loss=0.0, check=False)
    w=time.perf_counter()-t
print("solve", w, "peak", m.peak_mb, ds.attrs["rel_l2"], ds.attrs["epochs"], flush=True)
