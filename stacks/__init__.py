"""AWS CDK infrastructure for clipsearch: one construct per component.

The app is assembled by `stacks.app_factory.build_app`; `app.py` at the
repository root is only the entry point the CDK CLI runs. AWS specifics live
here and in `lambda/`; the core package `clipsearch/` knows nothing about CDK.
"""
