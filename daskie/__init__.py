"""daskie: neural-network solvers for integral equations, trained as Dask task graphs."""
