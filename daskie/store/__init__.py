"""Run stores: one zarr group per run, written through xarray (the only zarr user in daskie)."""

from daskie.store.run_store import RunStore, history_to_dataset, records_from_dataset

__all__ = ["RunStore", "history_to_dataset", "records_from_dataset"]
