"""From a strategy and a Plan to a Dask graph of training windows."""
