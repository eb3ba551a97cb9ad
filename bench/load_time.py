"""First load (GGUF dequantize + cache) vs second load (cached safetensors) of an embedded model.

Both loads run in fresh subprocesses against an empty temporary cache, so the ratio compares the two
paths on the same machine in the same run; each pair is repeated --repeat times, each time in a new empty
cache, and the medians (with min and max) are compared. Target: second load under a quarter of the first.

With `--reuse-cache` only reloads are timed, from the real cache (`$TUNELENS_CACHE`, else
~/.cache/tunelens; the model is dequantized there first if it is not yet): for qwen2.5-coder-1.5b a
first load is about two minutes and 9 GB of RSS, too much to repeat for a benchmark. A reload maps the
safetensors file: its pages are read when a forward pass first touches them, so the time is to a model
ready to run, not one resident in memory (and the peak RSS of a load says little, so none is printed).

    python bench/load_time.py [--model gemma3-270m] [--repeat 5] [--json PATH]
    python bench/load_time.py --model qwen2.5-coder-1.5b --reuse-cache --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchrecord import MIN_REPEATS, Figures, add_json_argument  # noqa: E402

_CHILD = """
import json, time, sys
start = time.perf_counter()
from tunelens.model.load import load_model
model, tok = load_model(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def timed_load_in_subprocess(spec: str, cache: str | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if cache is not None:
        env["TUNELENS_CACHE"] = cache
    out = subprocess.run([sys.executable, "-c", _CHILD, spec], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fresh_cache(model: str, repeat: int, figures: Figures) -> None:
    firsts, seconds = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="tunelens-cache-") as cache:
            firsts.append(timed_load_in_subprocess(model, cache)["seconds"])
            seconds.append(timed_load_in_subprocess(model, cache)["seconds"])
    first = figures.add("first load (dequantize + cache)", "s", firsts)
    second = figures.add("second load (cached)", "s", seconds)
    ratio = figures.ratio("second / first", "second load (cached)", "first load (dequantize + cache)", paired=True,
                          target="< 0.25")
    print(f"model {model}, {repeat} pairs of loads (median [min, max])")
    print(f"first load (dequantize + cache): {first['median']:6.1f} s [{first['min']:.1f}, {first['max']:.1f}]")
    print(f"second load (cached):            {second['median']:6.1f} s [{second['min']:.1f}, {second['max']:.1f}]")
    print(f"second / first:                  {ratio:6.3f}  (target < 0.25)")


def _reuse_cache(model: str, repeat: int, figures: Figures) -> None:
    from tunelens.model.specs import _is_model_dir, embedded_cache_dir

    print(f"model {model}")
    if not _is_model_dir(embedded_cache_dir(model)):
        first = timed_load_in_subprocess(model, None)
        print(f"first load (dequantize + cache): {first['seconds']:6.1f} s")
    loads = []
    for n in range(1, repeat + 1):
        loads.append(timed_load_in_subprocess(model, None)["seconds"])
        print(f"reload {n} (cached):               {loads[-1]:6.1f} s")
    reload = figures.add("reload (cached)", "s", loads)
    print(f"reload median {reload['median']:.1f} s [{reload['min']:.1f}, {reload['max']:.1f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--reuse-cache", action="store_true",
                        help="time reloads from the real cache instead of a fresh temporary one")
    parser.add_argument("--repeat", type=int, default=MIN_REPEATS,
                        help="pairs of loads (fresh cache), or reloads (with --reuse-cache)")
    add_json_argument(parser)
    args = parser.parse_args()
    figures = Figures("load_time", args)
    if args.reuse_cache:
        _reuse_cache(args.model, args.repeat, figures)
    else:
        _fresh_cache(args.model, args.repeat, figures)
    figures.write(args.json)


if __name__ == "__main__":
    main()
