"""What every benchmark shares: the embedded cluster, the run's metadata and one JSON shape.

Every benchmark writes a JSON **list of records** (flat dicts). Records of a solve carry the
keys ``daskie solve --json`` prints (``problem``, ``formulation``, ``strategy``,
``optimizer``, ``mse``, ``rel_l2``, ``loss``, ``epochs``, ``wall_s``, ...); every record also
carries the machine's state when it was written (:func:`machine`: daskie and torch versions,
torch threads, host cores, the load average, the UTC date and the command line), so that a
number is never read without the conditions it was measured in.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import sys

__all__ = ["machine", "write_records", "embedded_cluster", "plain"]


def machine() -> dict:
    """The conditions of a measurement: versions, threads, cores, load, date, command."""
    import torch

    import daskie

    return {"daskie": daskie.__version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "host_cores": os.cpu_count(),
            "load_1m": round(os.getloadavg()[0], 2),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}


def plain(value):
    """``value`` as JSON-compatible data: numpy scalars and arrays as numbers and lists, NaN
    and infinities as None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_records(path, records, **common) -> None:
    """Write ``records`` (a list of flat dicts) to ``path`` as one JSON list, each record
    with the machine's metadata (:func:`machine`) and ``common`` fields added (a record's
    own keys win)."""
    meta = {**machine(), **common}
    out = [plain({**meta, **dict(r)}) for r in records]
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")


@contextlib.contextmanager
def embedded_cluster(workers: int = 2, threads_per_worker: int = 1, **kwargs):
    """daskie's embedded LocalCluster (:func:`daskie.cluster.local_cluster`: 127.0.0.1, workers
    without the statistical profiler, torch at in-process speed) and its Client."""
    from daskie.cluster import local_cluster

    with local_cluster(workers, threads_per_worker, **kwargs) as client:
        yield client
