"""Lambda asset bundling without Docker.

CDK's default Python bundling runs pip inside a Docker container. This
project must synthesize where there is no Docker engine, so the assets are
built locally (`ILocalBundling`): pip downloads *wheels for the Lambda's
platform* (manylinux, the Lambda CPU architecture, the runtime's Python
version, `--only-binary=:all:`) into the asset directory, next to the
handler and the `clipsearch` core package source. Because only wheels are
accepted, nothing is compiled for the build machine by mistake.

What goes in: `lambda/<name>/` (the handler), `clipsearch/**/*.py` (the core,
pure Python) and the `aws` optional dependency group from `pyproject.toml`.
What never goes in: torch and the rest of the `local` group; the bundle is
checked after install and the build fails if they appear.

Asset hashes are computed by us from those inputs (file bytes, requirement
specifiers, platform), not from the bundle output, so they are identical on
every machine and between runs. Synth for tests can skip the dependency
install (`-c bundle_dependencies=false` or `CLIPSEARCH_BUNDLE_DEPS=0`): the
asset then holds only the sources and gets a different hash, and is not
deployable.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from stacks.config import REPO_ROOT

CORE_PACKAGE = "clipsearch"
# Packages that must never reach a Lambda bundle: torch alone is ~800 MB,
# four times Lambda's 250 MB unzipped limit.
FORBIDDEN_PACKAGES = ("torch", "torchvision", "triton", "nvidia", "transformers", "faiss")
# Bump to force new asset hashes when the bundle layout changes.
BUNDLE_FORMAT = "1"

PIP_PLATFORMS = {
    # manylinux2014 is what the issue pins; newer tags are accepted too because
    # Lambda's Python 3.12+ runtimes run on Amazon Linux 2023 (glibc 2.34) and
    # some projects only publish manylinux_2_28 wheels now.
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64"),
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64"),
}


class BundlingError(RuntimeError):
    """The Lambda bundle could not be built or would be wrong (e.g. torch got in)."""


def lambda_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> tuple[str, ...]:
    """The `aws` optional group: what the Lambdas need at run time, and nothing more."""
    data = tomllib.loads(pyproject.read_text())
    try:
        group = data["project"]["optional-dependencies"]["aws"]
    except KeyError:
        raise BundlingError(f"{pyproject} has no [project.optional-dependencies].aws group; "
                            "the Lambda bundles install exactly that group") from None
    for requirement in group:
        name = requirement.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
        if name.lower() in FORBIDDEN_PACKAGES:
            raise BundlingError(f"the aws group lists {name}, which must never reach a Lambda")
    return tuple(group)


@dataclass(frozen=True)
class BundleSpec:
    """Everything that determines a Lambda bundle, and therefore its asset hash."""

    handler_dir: Path
    requirements: tuple[str, ...]
    architecture: str
    python_version: str
    install_dependencies: bool

    def source_files(self) -> list[tuple[str, Path]]:
        """(path inside the bundle, path on disk), sorted, caches excluded."""
        files: list[tuple[str, Path]] = []
        for path in sorted(self.handler_dir.rglob("*")):
            if path.is_file() and not _is_cache(path):
                files.append((path.relative_to(self.handler_dir).as_posix(), path))
        core = REPO_ROOT / CORE_PACKAGE
        for path in sorted(core.rglob("*")):
            if path.is_file() and path.suffix in (".py", ".typed") and not _is_cache(path):
                files.append((path.relative_to(REPO_ROOT).as_posix(), path))
        return files

    def asset_hash(self) -> str:
        """sha256 over the inputs; stable across machines, clones and runs."""
        digest = hashlib.sha256()
        for part in (
            f"format={BUNDLE_FORMAT}",
            f"arch={self.architecture}",
            f"python={self.python_version}",
            f"deps={self.install_dependencies}",
            *(f"req={r}" for r in self.requirements),
        ):
            digest.update(part.encode() + b"\0")
        for relative, path in self.source_files():
            digest.update(relative.encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    def pip_command(self, target: Path) -> list[str]:
        platforms = [arg for p in PIP_PLATFORMS[self.architecture] for arg in ("--platform", p)]
        return [
            sys.executable, "-m", "pip", "install",
            "--target", str(target),
            *platforms,
            "--implementation", "cp",
            "--python-version", self.python_version,
            "--only-binary=:all:",
            "--no-compile",
            "--disable-pip-version-check",
            "--quiet",
            *self.requirements,
        ]


def _is_cache(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo")


def build_bundle(spec: BundleSpec, output_dir: Path) -> Path:
    """Write the bundle into output_dir (which may exist and be empty)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if spec.install_dependencies and spec.requirements:
        result = subprocess.run(spec.pip_command(output_dir), capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise BundlingError(
                f"pip could not install the Lambda dependencies for {spec.architecture} / "
                f"Python {spec.python_version} (only wheels are allowed, no Docker is used):\n"
                f"{result.stderr.strip()[-3000:]}\n"
                "To synth without them (not deployable), pass -c bundle_dependencies=false."
            )
    # Sources go in after the dependencies so ours win over any same-named module.
    for relative, path in spec.source_files():
        destination = output_dir / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    check_bundle(output_dir)
    return output_dir


def check_bundle(bundle: Path) -> None:
    """Fail the build if a forbidden package (torch and friends) got into the bundle."""
    present = sorted(
        p.name for p in bundle.iterdir()
        if p.name.split("-")[0].lower() in FORBIDDEN_PACKAGES
        or p.name.lower().startswith(tuple(f"{f}-" for f in FORBIDDEN_PACKAGES))
    )
    if present:
        raise BundlingError(f"forbidden packages in the Lambda bundle {bundle}: {present}; "
                            "something in the aws group pulls them in")


@jsii.implements(ILocalBundling)
class LocalBundler:
    """CDK calls this instead of Docker; it always bundles (or raises), never falls back."""

    def __init__(self, spec: BundleSpec) -> None:
        self._spec = spec

    def try_bundle(self, output_dir: str, options: BundlingOptions | None = None,
                   **_ignored: object) -> bool:
        build_bundle(self._spec, Path(output_dir))
        return True


def lambda_code(spec: BundleSpec) -> lambda_.Code:
    """A Lambda asset built by `LocalBundler` with a deterministic, input-derived hash."""
    return lambda_.Code.from_asset(
        str(spec.handler_dir),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=spec.asset_hash(),
        bundling=BundlingOptions(
            # Never pulled: LocalBundler always succeeds or raises. CDK requires an image.
            image=DockerImage.from_registry("clipsearch-local-bundling-only"),
            local=LocalBundler(spec),
        ),
    )


def python_version_of(runtime: lambda_.Runtime) -> str:
    """'python3.14' -> '3.14': pip must resolve wheels for the runtime, not for this machine."""
    name = runtime.name
    if not name.startswith("python"):
        raise BundlingError(f"not a Python runtime: {name}")
    return name.removeprefix("python")
