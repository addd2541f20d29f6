"""Bootstrap: load a whole catalog into a deployment in one resumable command.

A new deployment starts empty, and the first load must be fast, cheap and
safe to re-run. The pipeline (`clipsearch bootstrap`, `scripts/bootstrap.py`):

1. **prepare**   read the catalog (JSONL or ABO), hash every image (MD5 for
   S3's ETag, SHA-256 for identity) and decide the S3 key of each;
2. **upload**    images go to the stack's bucket in parallel; objects whose
   size and MD5 already match are skipped;
3. **transform** a SageMaker batch transform runs the packaged model over the
   images: MultiRecord JSON Lines (`{"id", "image": base64}` files under
   `transform/input/<run>/`) or SingleRecord `application/x-image`. With
   `--local-transform` the same handler code runs here, reading and writing
   S3 exactly as SageMaker does, so the next step cannot tell the difference;
4. **index**     the outputs are parsed and validated record by record, joined
   with the catalog metadata and bulk-loaded into a NEW versioned index
   (`<alias>-vN`), never into the live one;
5. **publish**   the alias moves to the new version in one atomic call; the old
   version is dropped;
6. **catalog**   the catalog file (image paths rewritten to s3:// URIs) goes
   to `catalog/` last: its S3 event makes the ingest Lambda record the
   catalog, and once the index holds every product with its image, the
   Lambda has nothing left to encode (see `pipeline.Bootstrap._upload_catalog`).

Why it is idempotent without trusting any one file: every artefact is named
by a fingerprint of what it was made from. Input and output prefixes and the
transform job name derive from the images and model (`run` id); the index
version records the fingerprint of its content in its mapping `_meta`. The
local state file (`--state-file`) lets a re-run skip finished steps quickly,
but a lost state file only costs a re-check: unchanged uploads are skipped by
ETag, a finished job is found by name, and the live index is recognised by
its fingerprint, so a re-run with nothing changed writes nothing.

Modules: `target` (stack outputs), `prepare` (catalog and hashes), `s3sync`
(parallel uploads), `transform` (job requests, SageMaker and the local
runner), `outputs` (parsing transform output), `indexing` (versioned bulk
load), `pipeline` (steps, state, report) and `cli` (arguments).
"""

from __future__ import annotations

from clipsearch.errors import ClipsearchError


class BootstrapError(ClipsearchError):
    """A bootstrap step could not finish; the message says what to do next."""

    status = 500
    code = "bootstrap_failed"


class TransformJobFailed(BootstrapError):
    """The batch transform ended in Failed or Stopped; carries SageMaker's reason."""

    code = "transform_failed"

    def __init__(self, message: str, *, job_name: str, failure_reason: str) -> None:
        super().__init__(message)
        self.job_name = job_name
        self.failure_reason = failure_reason


__all__ = ["BootstrapError", "TransformJobFailed"]
