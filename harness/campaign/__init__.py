"""Campaigns: a matrix of run configurations × seeds, fanned out over local worker
processes or a Dask cluster, each configuration judged against its expectation."""
