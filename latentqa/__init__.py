"""latentqa: LatentQA domain logic (config, models, reading, patching, decoder, metrics). No Prefect here."""

__version__ = "0.1.0"
