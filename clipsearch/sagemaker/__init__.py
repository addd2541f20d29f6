"""Everything about the SageMaker model container, in one place.

- `protocol`: the wire format (content types, limits, tagged client errors)
  shared by the handler in the artifact, the emulator and `SageMakerEncoder`;
  stdlib-only, so the Lambda bundles and the container can both import it.
- `package`: builds the reproducible `model.tar.gz` the container loads.
- `emulator`: a fast in-process stand-in for the endpoint, used by the Lambda
  and bootstrap tests (what it does not prove is in its docstring).

This `__init__` imports nothing: the handler vendors `protocol` alone into
the artifact and must not pull in the packager or the emulator.
"""
