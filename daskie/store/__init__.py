"""Run stores: one zarr group per run, written through xarray (the only zarr user in daskie).

Checkpoints are data (:mod:`daskie.store.checkpoint`), runs are transactions
(:class:`RunStore`, see :mod:`daskie.store.run_store`).
"""

from daskie.store.checkpoint import SCHEMA_VERSION, Checkpoint, decode_tree, encode_tree
from daskie.store.run_store import OUTCOMES, RunStore, history_to_dataset, records_from_dataset

__all__ = ["RunStore", "Checkpoint", "OUTCOMES", "SCHEMA_VERSION", "encode_tree", "decode_tree",
           "history_to_dataset", "records_from_dataset"]
