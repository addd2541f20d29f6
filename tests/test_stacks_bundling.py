"""Lambda bundling without Docker: deterministic hashes, the torch guard, and one real bundle.

`test_real_bundle_builds_without_docker_and_has_no_torch` downloads the `aws`
group's wheels from PyPI for linux/arm64 and Python 3.14, exactly as a real
`cdk synth` does (through the same LocalBundler object CDK calls), so it needs
the package index; it takes about 10-30 s.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk import aws_lambda as lambda_

from stacks.bundling import (
    BundleSpec,
    BundlingError,
    LocalBundler,
    build_bundle,
    check_bundle,
    lambda_requirements,
    python_version_of,
)
from stacks.config import REPO_ROOT
from stacks.functions import RUNTIME

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


def _spec(handler_dir: Path, **changes: object) -> BundleSpec:
    values: dict[str, object] = {
        "handler_dir": handler_dir,
        "requirements": lambda_requirements(),
        "architecture": "arm64",
        "python_version": python_version_of(RUNTIME),
        "install_dependencies": False,
    }
    values.update(changes)
    return BundleSpec(**values)  # type: ignore[arg-type]


@pytest.fixture
def handler_copy(tmp_path: Path) -> Path:
    target = tmp_path / "query"
    shutil.copytree(REPO_ROOT / "lambda" / "query", target,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_both_handlers_exist() -> None:
    for name in ("query", "ingest"):
        assert (REPO_ROOT / "lambda" / name / "handler.py").is_file()


def test_asset_hash_is_deterministic(handler_copy: Path) -> None:
    first = _spec(handler_copy).asset_hash()
    assert first == _spec(handler_copy).asset_hash()
    # A __pycache__ appearing (tests importing the handler) must not change the hash.
    cache = handler_copy / "__pycache__"
    cache.mkdir()
    (cache / "handler.cpython-311.pyc").write_bytes(b"\0junk")
    assert _spec(handler_copy).asset_hash() == first


def test_asset_hash_changes_with_every_input(handler_copy: Path) -> None:
    base = _spec(handler_copy).asset_hash()
    assert _spec(handler_copy, architecture="x86_64").asset_hash() != base
    assert _spec(handler_copy, python_version="3.13").asset_hash() != base
    assert _spec(handler_copy, install_dependencies=True).asset_hash() != base
    assert _spec(handler_copy, requirements=("boto3>=1",)).asset_hash() != base
    (handler_copy / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    assert _spec(handler_copy).asset_hash() != base


def test_asset_hash_does_not_depend_on_the_checkout_path(tmp_path: Path) -> None:
    one = tmp_path / "a" / "query"
    two = tmp_path / "b" / "elsewhere" / "query"
    for target in (one, two):
        shutil.copytree(REPO_ROOT / "lambda" / "query", target,
                        ignore=shutil.ignore_patterns("__pycache__"))
    assert _spec(one).asset_hash() == _spec(two).asset_hash()


def test_source_only_bundle_holds_handler_and_core(handler_copy: Path, tmp_path: Path) -> None:
    out = build_bundle(_spec(handler_copy), tmp_path / "bundle")
    assert (out / "handler.py").is_file()
    assert (out / "clipsearch" / "__init__.py").is_file()
    assert (out / "clipsearch" / "contract.py").is_file()
    assert not list(out.rglob("__pycache__"))
    assert not (out / "clipsearch" / "web").exists(), "static web assets are not Lambda code"


def test_torch_in_a_bundle_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "torch").mkdir()
    with pytest.raises(BundlingError, match="torch"):
        check_bundle(tmp_path)


def test_lambda_requirements_are_the_aws_group_without_torch() -> None:
    requirements = lambda_requirements()
    names = {r.split("[")[0].split(">")[0].split("=")[0].strip().lower() for r in requirements}
    assert {"boto3", "opensearch-py", "aws-lambda-powertools"} <= names
    assert not names & {"torch", "transformers", "faiss-cpu"}


def test_forbidden_requirement_in_the_aws_group_is_refused(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.optional-dependencies]\naws = ["boto3", "torch>=2"]\n')
    with pytest.raises(BundlingError, match="torch"):
        lambda_requirements(pyproject)


def test_pip_targets_the_lambda_platform_not_this_machine(handler_copy: Path) -> None:
    command = _spec(handler_copy, install_dependencies=True).pip_command(Path("/out"))
    assert "--only-binary=:all:" in command
    assert command[command.index("--python-version") + 1] == "3.14"
    assert command[command.index("--implementation") + 1] == "cp"
    assert "manylinux2014_aarch64" in command
    x86 = _spec(handler_copy, architecture="x86_64").pip_command(Path("/out"))
    assert "manylinux2014_x86_64" in x86 and "manylinux2014_aarch64" not in x86


def test_runtime_is_python_and_version_is_derived() -> None:
    assert python_version_of(lambda_.Runtime.PYTHON_3_12) == "3.12"
    with pytest.raises(BundlingError):
        python_version_of(lambda_.Runtime.NODEJS_22_X)


@pytest.mark.slow
def test_real_bundle_builds_without_docker_and_has_no_torch(tmp_path: Path) -> None:
    spec = _spec(REPO_ROOT / "lambda" / "query", install_dependencies=True)
    out = tmp_path / "asset"
    out.mkdir()
    assert LocalBundler(spec).try_bundle(str(out)) is True
    for package in ("boto3", "botocore", "opensearchpy", "requests_aws4auth",
                    "aws_lambda_powertools", "aws_xray_sdk", "clipsearch"):
        assert (out / package).is_dir(), f"{package} missing from the bundle"
    assert (out / "handler.py").is_file()
    top_level = {p.name.lower() for p in out.iterdir()}
    assert not top_level & {"torch", "transformers", "nvidia", "faiss"}
    # Every compiled extension is for the Lambda (aarch64, CPython 3.14), not this machine.
    extensions = list(out.rglob("*.so"))
    for extension in extensions:
        assert "x86_64" not in extension.name, extension
        assert "cpython-311" not in extension.name, extension
    assert any("aarch64" in e.name for e in extensions) or not extensions
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < LAMBDA_UNZIPPED_LIMIT, f"bundle is {size / 2**20:.0f} MiB unzipped"
    # It zips (what CDK uploads) and the handler is at the root of the archive.
    archive = tmp_path / "asset.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(out.rglob("*")):
            zf.write(path, path.relative_to(out))
    with zipfile.ZipFile(archive) as zf:
        assert "handler.py" in zf.namelist()
