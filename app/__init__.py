"""Entry points above the flows: the `latentqa` command line and the local Prefect operations (`latentqa up`).

The only package that may import every layer (flows, tasks, storage, latentqa); nothing imports it back."""
