"""The text and image towers on ONNX Runtime: the same vectors, faster on a CPU.

Why: on a CPU the query encoder is nearly the whole latency of a search, and
ONNX Runtime's fused transformer kernels run CLIP's towers faster than eager
torch (docs/benchmarks.md, "Query speed"). `OnnxEncoder` keeps the torch
encoder's tokenizer and image preprocessing (so inputs are bit-identical) and
swaps only the two forward passes.

How the towers are exported: any source encoder that exposes the tower hooks
(`tokenize` -> `text_tower`, `preprocess_images` -> `image_tower`, with plain
tensors in and out) is wrapped in a small `torch.nn.Module` per tower and
exported with `torch.onnx.export`, batch and sequence length dynamic. So one
export path serves every model family. The TorchScript exporter goes first:
it is deprecated since torch 2.9 but still in 2.15, and it exports ViT-B/32
many times faster than the dynamo exporter (14 minutes for the text tower
alone on this project's busy 2-core box); where it fails (a future torch
without it, or a tower it cannot trace), the dynamo exporter takes over.

Where exports live: beside a local model, in `<model>/.clipsearch-onnx/<key>/`
(or under ~/.cache/clipsearch/onnx/ for a hub id or a read-only directory),
where `<key>` hashes the model's files (names, sizes, modification times),
the family, and the torch/exporter versions, so a changed checkpoint is
re-exported rather than served stale. The export takes seconds to a minute
once; later starts load it.

int8: `quantize="int8"` applies ONNX Runtime's dynamic quantization
(int8 weights, activations quantized per batch). It is accepted only where
it keeps quality: at export it is compared with fp32 on probe texts and
images, and refused (ConfigurationError) below `INT8_MIN_COSINE`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch import config
from clipsearch.encoders import check_texts, l2_normalize
from clipsearch.encoders.threads import resolve_threads
from clipsearch.encoders.wrapping import EncoderWrapper
from clipsearch.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

log = logging.getLogger(__name__)

# Bump when the exported graphs change meaning, so old exports are not reused.
EXPORT_FORMAT = 2
OPSET = 17
EXPORT_DIRNAME = ".clipsearch-onnx"
# Below this cosine to fp32 on any probe, int8 is refused for the model.
INT8_MIN_COSINE = 0.99
PROBE_TEXTS = ("red leather ankle boot", "a blue striped cotton shirt", "wooden chair",
               "black metal watch with a round face", "pink dotted dress", "mug",
               "green sofa", "a yellow lamp on a table")


def onnx_available() -> bool:
    """Whether ONNX Runtime and the exporter's dependencies are installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None
               for name in ("onnxruntime", "onnx", "onnxscript"))


def with_runtime(encoder: Any, runtime: str = config.DEFAULT_RUNTIME, *,
                 quantize: str = config.DEFAULT_QUANTIZE,
                 threads: str | int | None = config.DEFAULT_THREADS) -> Any:
    """`encoder` (a torch tower encoder) on the requested runtime.

    "auto" takes ONNX Runtime when it is installed and the model is on the
    CPU (ONNX Runtime's CUDA provider is not set up here; torch fp16 on a GPU
    is already fast), else keeps torch.
    """
    if runtime not in config.RUNTIMES:
        raise ConfigurationError(f"runtime must be one of {', '.join(config.RUNTIMES)}, "
                                 f"got {runtime!r}")
    if runtime == "auto":
        on_cpu = str(getattr(encoder, "device", "cpu")) == "cpu"
        runtime = "onnx" if on_cpu and onnx_available() else "torch"
    if runtime == "torch":
        if quantize != "none":
            raise ConfigurationError("--quantize int8 needs the onnx runtime (--runtime onnx)")
        return encoder
    return OnnxEncoder(encoder, quantize=quantize, threads=threads)


def _model_files(model_id: str) -> Path | None:
    """The directory holding the model's files: the local one, or the hub cache's snapshot."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:
        return None


def export_key(model_id: str, family: str) -> str:
    """Hash of the model's files and of what produced the export."""
    import torch

    digest = hashlib.sha256()
    digest.update(json.dumps([EXPORT_FORMAT, family, torch.__version__]).encode())
    files = _model_files(model_id)
    if files is None:
        digest.update(model_id.encode())
    else:
        for file in sorted(files.rglob("*")):
            relative = file.relative_to(files)
            if relative.parts[0] == EXPORT_DIRNAME or not file.is_file():
                continue
            stat = file.stat()
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def export_dir(model_id: str, family: str) -> Path:
    """Where this model's export lives: beside the model when that is writable."""
    key = export_key(model_id, family)
    local = Path(model_id).expanduser()
    if local.is_dir() and os.access(local, os.W_OK):
        return local / EXPORT_DIRNAME / key
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)[-80:]
    return cache / "clipsearch" / "onnx" / f"{safe}-{key}"


def _numpy_feeds(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    import numpy as np

    feeds = {}
    for name, value in tensors.items():
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        feeds[name] = array.astype(np.int64 if array.dtype.kind in "iub" else np.float32,
                                   copy=False)
    return feeds


def _as_mapping(pixels: Any) -> Mapping[str, Any]:
    return pixels if isinstance(pixels, Mapping) else {"pixel_values": pixels}


def _probe_images(size: int = 96) -> list[Image.Image]:
    """Deterministic, varied test pictures (gradients and blocks), no files needed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for i in range(6):
        base = np.linspace(0, 255, size, dtype=np.float32)
        pixels = np.stack([np.add.outer(base * (i % 3) / 2, base * (i % 2)) % 256,
                           np.add.outer(base, base[::-1]) / 2,
                           rng.uniform(0, 255, (size, size))], axis=-1)
        images.append(Image.fromarray(pixels.astype(np.uint8), "RGB"))
    return images


def _dynamic_axes(inputs: Mapping[str, Any]) -> dict[str, dict[int, str]]:
    """Batch is dynamic everywhere; token tensors (integer, 2-d) also in sequence length."""
    return {name: {0: "batch", 1: "sequence"} if t.dim() == 2 and not t.is_floating_point()
            else {0: "batch"} for name, t in inputs.items()}


def _export(source: Any, directory: Path) -> None:
    """Write text.onnx and image.onnx for `source`'s towers (fp32, CPU)."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self, model: torch.nn.Module, run: Any, names: list[str]) -> None:
            super().__init__()
            self.model = model  # registered, so the export sees its weights
            self.run = run
            self.names = names

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.run(dict(zip(self.names, tensors, strict=True)))

    tokens = dict(source.tokenize(list(PROBE_TEXTS[:2])))
    pixels = dict(_as_mapping(source.preprocess_images(_probe_images()[:2])))
    for name, run, inputs in (("text", source.text_tower, tokens),
                              ("image", source.image_tower, pixels)):
        names = list(inputs)
        tower = Tower(source.model, run, names).eval()
        args = tuple(inputs[n] for n in names)
        path = str(directory / f"{name}.onnx")
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter
            try:
                # TorchScript tracing: ViT-B/32 in about a minute on a busy
                # 2-core box, where the dynamo exporter took 14 (text tower).
                torch.onnx.export(tower, args, path, input_names=names,
                                  output_names=["features"], dynamo=False,
                                  opset_version=OPSET,
                                  dynamic_axes=_dynamic_axes(inputs))
            except Exception as exc:  # a torch without the legacy exporter, or a
                # tower it cannot trace: the dynamo exporter handles both.
                log.warning("TorchScript export of the %s tower failed (%s); using dynamo",
                            name, exc)
                auto = torch.export.Dim.AUTO
                shapes = tuple({axis: auto for axis in range(t.dim())} for t in args)
                torch.onnx.export(tower, args, path, input_names=names,
                                  output_names=["features"], dynamic_shapes=(shapes,),
                                  dynamo=True, external_data=False, verbose=False)


def _quantize(directory: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in ("text", "image"):
        quantize_dynamic(directory / f"{name}.onnx", directory / f"{name}-int8.onnx",
                         weight_type=QuantType.QInt8)


class OnnxEncoder(EncoderWrapper):
    """`source`'s tokenizer and preprocessing, its towers on ONNX Runtime (CPU)."""

    def __init__(self, source: Any, *, quantize: str = "none",
                 threads: str | int | None = config.DEFAULT_THREADS,
                 family: str | None = None, verify_int8: bool = True) -> None:
        """`verify_int8=False` skips the quality gate (benchmarks measure it themselves)."""
        if quantize not in config.QUANTIZATIONS:
            raise ConfigurationError(f"quantize must be one of {', '.join(config.QUANTIZATIONS)}, "
                                     f"got {quantize!r}")
        if not onnx_available():
            raise ConfigurationError("the onnx runtime needs the `onnx` extra: "
                                     "pip install 'clipsearch[onnx]'")
        self.inner = self.source = source
        self.quantize = quantize
        self.threads = resolve_threads(threads, "onnx")
        self.batch_size = source.batch_size
        family = family or type(source).__name__
        self.directory = export_dir(source.model_id, family)
        self._ensure_export()
        suffix = "-int8" if quantize == "int8" else ""
        self.text_session = self._session(self.directory / f"text{suffix}.onnx")
        self.image_session = self._session(self.directory / f"image{suffix}.onnx")
        if quantize == "int8" and verify_int8:
            self._check_int8()

    # ------------------------------------------------------------------ export

    def _ensure_export(self) -> None:
        directory = self.directory
        if not (directory / "text.onnx").is_file() or not (directory / "image.onnx").is_file():
            log.warning("exporting %s's towers to ONNX in %s (once per model)",
                        self.source.model_id, directory)
            directory.parent.mkdir(parents=True, exist_ok=True)
            # Export into a scratch directory and rename: a crash or a
            # concurrent start never leaves a half-written export behind.
            scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=directory.parent))
            _export(self.source, scratch)
            self._publish(scratch)
        if self.quantize == "int8" and not (directory / "text-int8.onnx").is_file():
            scratch = Path(tempfile.mkdtemp(prefix=".quantize-", dir=directory.parent))
            for name in ("text", "image"):
                os.link(directory / f"{name}.onnx", scratch / f"{name}.onnx")
            _quantize(scratch)
            for name in ("text", "image"):
                os.replace(scratch / f"{name}-int8.onnx", directory / f"{name}-int8.onnx")
                (scratch / f"{name}.onnx").unlink()
            scratch.rmdir()

    def _publish(self, scratch: Path) -> None:
        scratch.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            os.rename(scratch, self.directory)
        except OSError:  # another process published first: use theirs
            for file in scratch.iterdir():
                file.unlink()
            scratch.rmdir()
            return
        self._remove_stale_exports()

    def _remove_stale_exports(self) -> None:
        """Delete this model's exports for files it no longer has (hundreds of MB each).

        Safe while another process still runs an old export: ONNX Runtime
        reads the file whole when it opens a session, and unlinking an open
        file leaves it readable to that process.
        """
        name = self.directory.name
        prefix = name[: -len(name.rsplit("-", 1)[-1])] if "-" in name else ""
        for sibling in self.directory.parent.iterdir():
            key = sibling.name[len(prefix):]
            if (sibling == self.directory or not sibling.is_dir()
                    or not sibling.name.startswith(prefix) or len(key) != 16
                    or any(c not in "0123456789abcdef" for c in key)):
                continue
            log.info("removing the stale ONNX export %s", sibling)
            shutil.rmtree(sibling, ignore_errors=True)

    def _session(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn a core waiting for work; on a shared box that
        # core is someone else's. Off, as measured in docs/benchmarks.md.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _check_int8(self) -> None:
        """Refuse int8 where it moves vectors away from fp32 (result cached beside the export)."""
        import numpy as np

        record = self.directory / "int8-check.json"
        if record.is_file():
            worst = float(json.loads(record.read_text())["min_cosine"])
        else:
            fp32 = OnnxEncoder(self.source, threads=self.threads)
            images = _probe_images()
            pairs = [(fp32.encode_texts(PROBE_TEXTS), self.encode_texts(PROBE_TEXTS)),
                     (fp32.encode_images(images), self.encode_images(images))]
            worst = min(float(np.min(np.sum(a * b, axis=1))) for a, b in pairs)
            record.write_text(json.dumps({"min_cosine": worst}))
        if worst < INT8_MIN_COSINE:
            raise ConfigurationError(
                f"int8 quantization changes {self.source.model_id!r}'s vectors too much (min "
                f"cosine to fp32 {worst:.4f} < {INT8_MIN_COSINE}); use --quantize none")

    # ------------------------------------------------------------------ protocol

    def encode_texts(self, texts: Sequence[str], *, apply_template: bool = True) -> np.ndarray:
        import numpy as np

        check_texts(texts)
        prompts = [self.source.format_query(t) if apply_template else t for t in texts]
        chunks = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.source.tokenize(prompts[start : start + self.batch_size])
            chunks.append(self.text_session.run(None, _numpy_feeds(tokens))[0])
        if not chunks:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return l2_normalize(np.concatenate(chunks))

    def preprocess_images(self, images: Sequence[bytes | Image.Image]) -> Any:
        return self.source.preprocess_images(images)

    def encode_pixels(self, pixels: Any) -> np.ndarray:
        return l2_normalize(self.image_session.run(None, _numpy_feeds(_as_mapping(pixels)))[0])

    def encode_images(self, images: Sequence[bytes | Image.Image]) -> np.ndarray:
        import numpy as np

        size = self.batch_size
        chunks = [self.encode_pixels(self.preprocess_images(images[start : start + size]))
                  for start in range(0, len(images), size)]
        if not chunks:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(chunks)
