"""Load a model into a read-only `ModelBundle`: the shipped organism, a local folder, or a Hugging Face Hub id.

    >>> bundle = load_model("gpt2")             # or "organism", or "/path/to/folder"
    >>> bundle.n_layers, bundle.n_heads, bundle.d_model
    (12, 12, 768)

Every model is loaded the same way: eager attention (`interp_core.recorded_attention`: transformers' eager
arithmetic, which returns attention weights and can write them straight into a trace), no remote code,
safetensors only (pickle checkpoints can run code when loaded), eval mode, no gradients on the weights, in the
precision asked for (`DTYPES`; by default float32 on a CPU, and on a GPU the half precision a checkpoint is stored
in: `default_dtype`). Analyses compute their numerically sensitive steps in float32 whatever the model's dtype.

`bundle.fingerprint` names the exact weights and their dtype: every cache key includes it, so a model folder
retrained in place, or loaded in another precision, is not served results of the old weights.
`weights_fingerprint(ref)` computes it from the files (stat only).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import socket
import tempfile
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from interp_core.adapters import (
    ADAPTERS,
    ArchitectureAdapter,
    adapter_for,
    adapter_for_class_name,
    unsupported_message,
)
from interp_core.converted_weights import converted_state_dict
from interp_core.errors import ModelLoadError, UnsupportedArchitectureError, UserInputError
from interp_core.locks import FairLock
from interp_core.recorded_attention import IMPLEMENTATION as ATTENTION
from interp_core.settings import SHIPPED_MODEL, SHIPPED_MODEL_DIR

HUB_PROBE_TIMEOUT_S = 2.0  # how long to wait for the Hub's host before saying it cannot be reached
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
# Files whose change changes what a loaded model computes (weights, config, tokenizer); a folder's other files
# (the organism's eval.json, training_curve.json, a README) do not count towards its fingerprint.
FINGERPRINT_FILES = frozenset(
    ("config.json", "generation_config.json", "model.safetensors.index.json", "special_tokens_map.json",
     "added_tokens.json", "merges.txt", *TOKENIZER_FILES)
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # the precisions offered
_memory_serial = itertools.count(1)  # bundle_from_model on an in-memory model: one fingerprint per call


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model with its tokenizer, adapter and dimensions. Shared by every session: never mutate it.

    Forward passes, hooks and gradients run through `interp_core.activations.run`, which holds `lock` (a
    FIFO-fair re-entrant lock, so a long job that releases it between chunks lets waiting requests in). Tokenizer
    calls hold `tokenizer_lock` instead (interp_core.tokens), so tokenising never waits for a forward pass.
    """

    ref: str  # what the user picked: "organism", a folder path or a hub id; the cache key for results
    model: PreTrainedModel = field(repr=False)
    tokenizer: object = field(repr=False)  # a transformers tokenizer
    adapter: ArchitectureAdapter = field(repr=False)
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    n_ctx: int  # longest sequence the model accepts (positions)
    d_vocab: int  # rows of the unembedding (may exceed the tokenizer's vocabulary, e.g. Pythia)
    device: torch.device
    family: str  # adapter family: "gpt2", "gpt_neox" or "llama"
    # Names these exact weights (see weights_fingerprint; "memory-N" for an in-memory model): part of every
    # cache key, so results of a folder's old weights are never served for the new ones.
    fingerprint: str = ""
    dtype: torch.dtype = torch.float32  # the weights' precision (one of DTYPES)
    lock: FairLock = field(default_factory=FairLock, compare=False, repr=False)
    # A Rust tokenizer shared between threads can fail with "Already borrowed": tokenizer calls hold this (a
    # plain Lock, never held while taking `lock`), not the model's lock.
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)


def _context_length(config) -> int:
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if value:
            return int(value)
    return 2048


def bundle_from_model(model: PreTrainedModel, tokenizer, ref: str, fingerprint: str | None = None) -> ModelBundle:
    """Wrap an in-memory causal LM and its tokenizer in a `ModelBundle`.

    Puts the model in eval mode with eager attention (interp_core.recorded_attention) and no gradients on its
    weights, and sets the tokenizer's pad token to its EOS token when it has none. Raises
    UnsupportedArchitectureError for unknown model classes.

    `fingerprint` defaults to "memory-N", N a per-process serial number of this call: an in-memory model has no
    files to stat, and id(model) or its parameters' data pointers can be reused by another model once it is
    garbage-collected, so two calls never share cache entries (a second bundle around the same model misses
    the cache once; it is never served another model's results). `load_model` passes the files' fingerprint.
    """
    adapter = adapter_for(model)
    if getattr(model.config, "_attn_implementation", None) != ATTENTION:
        model.set_attn_implementation(ATTENTION)  # SDPA returns no attention weights
    model.eval()
    model.requires_grad_(False)
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
    w_o = adapter.W_O(model, 0)  # [head, d_head, d_model]
    return ModelBundle(
        ref=ref,
        model=model,
        tokenizer=tokenizer,
        adapter=adapter,
        n_layers=len(adapter.blocks(model)),
        n_heads=int(w_o.shape[0]),
        d_model=int(w_o.shape[2]),
        d_head=int(w_o.shape[1]),
        n_ctx=_context_length(model.config),
        d_vocab=int(adapter.unembed_weight(model).shape[0]),
        device=input_device(model),
        family=adapter.family,
        fingerprint=fingerprint or f"memory-{next(_memory_serial)}",
        dtype=next(model.parameters()).dtype,
    )


def input_device(model: PreTrainedModel) -> torch.device:
    """Where the token ids go in: the input embedding's device, or under accelerate's device_map the device its
    hook runs it on (an offloaded embedding's weights sit on the meta device between passes)."""
    embedding = model.get_input_embeddings()
    execution = getattr(getattr(embedding, "_hf_hook", None), "execution_device", None)
    if execution is not None:
        return torch.device(f"cuda:{execution}" if isinstance(execution, int) else execution)
    return embedding.weight.device


def dtype_name(dtype: str | torch.dtype) -> str:
    """The name in DTYPES of `dtype` (a name or a torch dtype); raises ModelLoadError for any other."""
    for name, value in DTYPES.items():
        if dtype in (name, value):
            return name
    raise ModelLoadError(f"The precision {dtype!r} is not offered; pick one of {', '.join(DTYPES)}.")


def default_dtype(ref_or_config: object = None) -> str:
    """float32 on a CPU; on a GPU the half precision (float16 or bfloat16) the checkpoint is stored in, when its
    config says so (`ref_or_config`: a reference as load_model takes, or a loaded config), else float32."""
    if not torch.cuda.is_available():
        return "float32"
    config = ref_or_config
    if isinstance(config, str):
        folder = _model_folder(config)
        try:
            config = AutoConfig.from_pretrained(str(folder), local_files_only=True) if folder else None
        except (OSError, ValueError, KeyError):
            config = None
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = next((n for n, d in DTYPES.items() if stored in (n, d)), "float32")
    return name if name in ("float16", "bfloat16") else "float32"


def fingerprint_in(files: str, dtype: str | torch.dtype) -> str:
    """A files fingerprint of weights loaded in `dtype`: as it is for float32, with the dtype's name appended for
    a half precision, so that no cache serves a float32 result for bfloat16 weights or back."""
    name = dtype_name(dtype)
    return files if not files or name == "float32" else f"{files}-{name}"


def load_model(ref: str, dtype: str | torch.dtype | None = None,
               max_memory: Mapping[int | str, int | str] | None = None) -> ModelBundle:
    """Load `ref` ("organism", a local folder, or a hub id such as "gpt2") as a read-only `ModelBundle`, its
    weights in `dtype` (a name in DTYPES or a torch dtype; None: `default_dtype` of the checkpoint).

    `max_memory` ({device: bytes or "20GiB"}, devices as accelerate names them: 0, 1, ... for GPUs, "cpu")
    spreads the model over those devices with accelerate's device_map="auto", consecutive blocks filling each
    in turn, and what fits on none is offloaded to disk (a temporary folder); tensors move where blocks meet.

    Raises ModelLoadError (or its subclass UnsupportedArchitectureError) with a plain message when the model
    cannot be loaded. Hub ids are looked up in the local cache first; the network is tried only on a cache miss.
    """
    dtype = None if dtype is None else dtype_name(dtype)
    ref = (ref or "").strip()
    if not ref:
        raise ModelLoadError("No model was chosen. Pick the shipped model or enter a folder path or a hub id.")
    if ref == SHIPPED_MODEL:
        if not SHIPPED_MODEL_DIR.is_dir():
            raise ModelLoadError(
                f"The shipped model is not in {SHIPPED_MODEL_DIR} yet. Train it with the organism script, "
                "or pick a hub model such as gpt2."
            )
        return _load_folder(SHIPPED_MODEL_DIR, ref, dtype, max_memory)
    path = Path(ref).expanduser()
    if path.exists() or ref.startswith(("/", ".", "~")) or "\\" in ref:
        return _load_folder(path, ref, dtype, max_memory)
    return _load_hub(ref, dtype, max_memory)


def weights_fingerprint(ref: str) -> str:
    """A short hash naming the files `ref` would be loaded from: the folder's resolved path and the name, size,
    inode and modification time (ns) of every *.safetensors file and every config or tokenizer file in it
    (FINGERPRINT_FILES). Stat calls only, no file is read, so it is cheap enough for every page run.

    A hub id's folder is its snapshot in the local Hugging Face cache (named by the commit). "" when `ref` names
    no folder (a missing path, a hub model not downloaded yet).
    """
    folder = _model_folder(ref)
    return _folder_fingerprint(folder) if folder is not None else ""


def _model_folder(ref: str) -> Path | None:
    """The folder `load_model(ref)` reads, resolved as it does; None when there is none (yet)."""
    ref = (ref or "").strip()
    if not ref:
        return None
    if ref == SHIPPED_MODEL:
        return SHIPPED_MODEL_DIR if SHIPPED_MODEL_DIR.is_dir() else None
    path = Path(ref).expanduser()
    if path.exists() or ref.startswith(("/", ".", "~")) or "\\" in ref:
        return path if path.is_dir() else None
    if not _HUB_ID.fullmatch(ref):
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(ref, "config.json")  # reads the cache's refs/main, never the network
    except (ValueError, OSError):
        return None
    return Path(found).parent if isinstance(found, str) else None


def _folder_fingerprint(folder: Path) -> str:
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        digest = hashlib.sha256(str(folder.resolve()).encode())
    except OSError:
        return ""
    for entry in entries:
        if not (entry.name.endswith(".safetensors") or entry.name in FINGERPRINT_FILES):
            continue
        try:
            info = entry.stat()  # follows symlinks: a hub snapshot's files link to its blobs
        except OSError:
            continue
        digest.update(f"{entry.name}\0{info.st_size}\0{info.st_ino}\0{info.st_mtime_ns}\n".encode())
    return "files-" + digest.hexdigest()[:16]


def _load_folder(path: Path, ref: str, dtype: str | None, max_memory: Mapping | None = None) -> ModelBundle:
    if not path.exists():
        raise ModelLoadError(f"There is no folder at {path}. Check the path, or pick the shipped model.")
    if not path.is_dir():
        raise ModelLoadError(
            f"{path} is a file. Give the folder that holds config.json, the .safetensors weights and the tokenizer."
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"The folder {path} has no config.json, so it is not a saved transformers model. "
            "Save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)."
        )
    files = [p.name for p in path.iterdir() if p.is_file()]
    if not any(name.endswith(".safetensors") for name in files):
        pickles = sorted(name for name in files if name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ModelLoadError(
                f"The folder {path} only has pickle checkpoints ({', '.join(pickles)}). Pickle files can run "
                "arbitrary code when loaded, so they are refused. Convert the model to safetensors with "
                "model.save_pretrained(folder) and try again."
            )
        raise ModelLoadError(
            f"The folder {path} has no weights (no .safetensors file). Save the model there with "
            "model.save_pretrained(folder)."
        )
    if not any(name in files for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"The folder {path} has no tokenizer (no tokenizer.json or tokenizer_config.json). Save the "
            "tokenizer into the same folder with tokenizer.save_pretrained(folder)."
        )
    fingerprint = _folder_fingerprint(path)  # before reading: files rewritten meanwhile count as changed
    try:
        return _load(str(path), ref, dtype, max_memory, local_files_only=True, fingerprint=fingerprint)
    except UserInputError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"The model in {path} could not be loaded: {error}") from error


def _load_hub(ref: str, dtype: str | None, max_memory: Mapping | None = None) -> ModelBundle:
    if not _HUB_ID.fullmatch(ref):
        raise ModelLoadError(
            f"'{ref}' is neither an existing folder nor a Hugging Face Hub id like 'gpt2' or 'EleutherAI/pythia-70m'."
        )
    try:
        return _load(ref, ref, dtype, max_memory, local_files_only=True)
    except UserInputError:
        raise
    except OSError:
        pass  # not (completely) in the local cache: try the network below
    if not _hub_reachable():
        raise ModelLoadError(
            f"The model '{ref}' is not in the local Hugging Face cache and the Hub cannot be reached from here. "
            "Download it once with network access, or pick the shipped model."
        )
    try:
        return _load(ref, ref, dtype, max_memory, local_files_only=False)
    except UserInputError:
        raise
    except (OSError, ValueError) as error:  # huggingface_hub's HTTP errors are OSErrors
        raise ModelLoadError(
            f"The model '{ref}' could not be loaded from the Hugging Face Hub. Check the id (for example "
            f"'gpt2' or 'EleutherAI/pythia-70m'), or pick the shipped model. Details: {error}"
        ) from error


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """True when the Hub's host accepts a TCP connection within `timeout` seconds (DNS included)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _causal_lm_class_name(config) -> str:
    """The causal-LM class transformers would build for `config`; raises UnsupportedArchitectureError."""
    class_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    if class_name not in ADAPTERS:
        declared = (getattr(config, "architectures", None) or [class_name or config.model_type])[0]
        raise UnsupportedArchitectureError(unsupported_message(str(declared)))
    return class_name


def _placement(max_memory: Mapping | None) -> dict:
    """from_pretrained's arguments that spread a model over devices and disk (none: load it whole)."""
    if max_memory is None:
        return {}
    return {"device_map": "auto", "max_memory": dict(max_memory),
            "offload_folder": tempfile.mkdtemp(prefix="interp-offload-")}


def _load(source: str, ref: str, dtype: str | None, max_memory: Mapping | None, local_files_only: bool,
          fingerprint: str | None = None) -> ModelBundle:
    """Load config, tokenizer and weights (in `dtype`, None: the config's default_dtype) from a folder or hub id.
    Lets OSError through (cache miss, I/O).

    A hub model's fingerprint is taken from its cached snapshot once loaded (downloaded, maybe)."""
    common = {"trust_remote_code": False, "local_files_only": local_files_only}
    try:
        config = AutoConfig.from_pretrained(source, **common)
    except (ValueError, KeyError) as error:  # unknown model_type
        raise UnsupportedArchitectureError(
            f"The config of '{ref}' names a model type transformers does not know. {unsupported_message('it')}"
        ) from error
    class_name = _causal_lm_class_name(config)
    adapter_for_class_name(class_name)  # fail before reading the weights
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
    except (ValueError, TypeError) as error:
        raise ModelLoadError(f"The tokenizer of '{ref}' could not be loaded: {error}") from error
    torch_dtype = DTYPES[dtype or default_dtype(config)]
    state = converted_state_dict(Path(source), torch_dtype) if max_memory is None and os.path.isdir(source) else None
    model, info = (AutoModelForCausalLM if state is None else getattr(transformers, class_name)).from_pretrained(
        source if state is None else None,
        state_dict=state,
        config=config,
        attn_implementation=ATTENTION,
        use_safetensors=True,
        dtype=torch_dtype,
        output_loading_info=True,
        **(placement := _placement(max_memory)),
        **common,
    )
    if "offload_folder" in placement:  # removed once the model is dropped, or at exit
        weakref.finalize(model, shutil.rmtree, placement["offload_folder"], ignore_errors=True)
    missing = [key for key in info.get("missing_keys", ()) if key.endswith(".weight")]
    if missing:
        raise ModelLoadError(
            f"The weights of '{ref}' do not match its config: {len(missing)} weight tensors are missing "
            f"(for example {missing[0]}). Save the model again with model.save_pretrained(folder)."
        )
    if max_memory is None:
        model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    files = fingerprint or weights_fingerprint(ref)
    return bundle_from_model(model, tokenizer, ref, fingerprint_in(files, model.dtype) or None)
