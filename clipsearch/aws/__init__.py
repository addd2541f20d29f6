"""AWS-side building blocks shared by the Lambdas (and usable by the bootstrap).

Why a package of its own: `lambda/query/handler.py` and `lambda/ingest/handler.py`
are thin glue (Powertools, environment, module-level singletons). What they
glue together lives here, so it is importable, type-checked and tested like
the rest of clipsearch, and is bundled into each Lambda with the core package:

- `settings`: the environment variables the stack sets, validated once;
- `clients`: boto3/OpenSearch clients and the encoder/index built from settings;
- `s3`: image references in the catalog bucket, reading objects, presigned URLs;
- `events`: SQS messages carrying S3 notifications, parsed defensively;
- `gateway`: API Gateway REST proxy events <-> `clipsearch.api.handle`;
- `catalog_store`: the catalog records kept in OpenSearch before (and after)
  their image is encoded, so an image upload can find its product;
- `ingest`: the reconciliation logic of the ingest Lambda.

Nothing here imports torch, transformers or PIL: the Lambda bundles carry
only the `aws` dependency group.
"""
