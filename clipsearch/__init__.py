"""clipsearch: multimodal product search with CLIP.

The package holds everything the runtimes share (catalog model, encoders,
vector indexes, the search service and the API contract) so that the CLI,
the local server, the Lambdas and the SageMaker handler never re-implement it.
Heavy dependencies (torch, faiss, numpy) are imported lazily by the modules
that need them, which keeps the Lambda bundles small.
"""

__version__ = "0.1.0"
