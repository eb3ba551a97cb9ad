"""First load (GGUF dequantize + cache) vs second load (cached safetensors) of an embedded model.

Both loads run in fresh subprocesses against an empty temporary cache, so the ratio compares the two
paths on the same machine in the same run. Target: second load under a quarter of the first.

    python bench/load_time.py [--model gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_CHILD = """
import json, time, sys
start = time.perf_counter()
from tunelens.model.load import load_model
model, tok = load_model(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def timed_load_in_subprocess(spec: str, cache: str) -> float:
    env = dict(os.environ, TUNELENS_CACHE=cache, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", _CHILD, spec], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tunelens-cache-") as cache:
        first = timed_load_in_subprocess(args.model, cache)
        second = timed_load_in_subprocess(args.model, cache)
    print(f"model {args.model}")
    print(f"first load (dequantize + cache): {first:6.1f} s")
    print(f"second load (cached):            {second:6.1f} s")
    print(f"second / first:                  {second / first:6.3f}  (target < 0.25)")


if __name__ == "__main__":
    main()
