"""Load a diffusers checkpoint (a pipeline folder or one component folder) into torch modules, offline.

Weights are read by us, not by `from_pretrained`, so that every failure names the file or tensor at fault
and nothing is ever unpickled: safetensors by default; .bin/.ckpt/.pt only with allow_pickle, and then
through `torch.load(weights_only=True)`. Models are built from their config (diffusers `from_config`,
transformers config classes), so every topology those classes accept loads.

safetensors files are read with `pread`, not memory-mapped: a mapped file stays resident until the last of its
tensors dies, and one small bias kept by an exported graph pinned all 3.3 GB of the SD-1.5 UNet through the
lowering. Read tensors own their memory, so each one frees its bytes when the compile drops it.

A component with more weight bytes than fusionc.streaming.stream_threshold() (4 GiB; T5-XXL's encoder is 19 GB)
is not loaded at all: its parameters stay on the meta device and are read from the files tensor by tensor when
torch runs it or the export writes them (fusionc.streaming).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from fusionc.core.errors import BadInputError, UnsupportedError  # noqa: E402
from fusionc.streaming import build_streamed, stream_threshold  # noqa: E402

SAFETENSORS = ("diffusion_pytorch_model.safetensors", "model.safetensors")
PICKLES = ("diffusion_pytorch_model.bin", "pytorch_model.bin", "model.ckpt", "model.pt", "model.bin")
SUPPORTED = {
    "UNet2DConditionModel": ("diffusers", "unet"),
    "AutoencoderKL": ("diffusers", "vae"),
    "AutoencoderTiny": ("diffusers", "vae"),
    "CLIPTextModel": ("transformers", "text_encoder"),
    "CLIPTextModelWithProjection": ("transformers", "text_encoder"),
    "ControlNetModel": ("diffusers", "controlnet"),
    "T5EncoderModel": ("transformers", "text_encoder"),
    "SD3Transformer2DModel": ("diffusers", "transformer"),
    "PixArtTransformer2DModel": ("diffusers", "transformer"),
}
MODEL_FOLDERS = ("text_encoder", "text_encoder_2", "text_encoder_3", "unet", "transformer", "vae", "controlnet")
TOKENIZER_FOLDERS = ("tokenizer", "tokenizer_2", "tokenizer_3")
# model_index entries a text-to-image run does without: left out of the build, with a note in the manifest
OPTIONAL_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder")
NOT_MODELS = (*TOKENIZER_FOLDERS, "scheduler")
TRANSFORMERS_CONFIGS = {"CLIPTextModel": "CLIPTextConfig", "CLIPTextModelWithProjection": "CLIPTextConfig",
                        "T5EncoderModel": "T5Config"}

# fusionc.models' pipeline, found by path: fusionc.models imports the driver (its training script), not the reverse
BUILTIN_CHECKPOINT = Path(__file__).parent / "models" / "tiny_sd"
# the built-in pipeline + its trained ControlNet (the other folders link to tiny_sd's): `builtin:controlnet`
BUILTIN_CONTROLNET = Path(__file__).parent / "models" / "tiny_controlnet"
# an SD3-shaped pipeline (MMDiT, flow matching) trained on the same shapes, reusing tiny_sd's CLIP and VAE: `builtin:sd3`
BUILTIN_SD3 = Path(__file__).parent / "models" / "tiny_sd3"
BUILTIN_NAMES = {"builtin": BUILTIN_CHECKPOINT, "builtin:controlnet": BUILTIN_CONTROLNET, "builtin:sd3": BUILTIN_SD3}


def checkpoint_path(path: Path | str | None) -> Path:
    """The folder a CHECKPOINT argument names: None or `builtin` the built-in pipeline, `builtin:NAME` another
    built-in one (a `builtin:` name that is none of them is refused, naming them), anything else a path."""
    if path is None:
        return BUILTIN_CHECKPOINT
    if str(path) in BUILTIN_NAMES:
        return BUILTIN_NAMES[str(path)]
    if str(path).startswith("builtin:") and not Path(path).exists():
        raise BadInputError(f"unknown built-in checkpoint '{path}': the built-in ones are {', '.join(BUILTIN_NAMES)}")
    return Path(path)


def component_names_of(folders: Any) -> list[str]:
    """The exportable components of a checkpoint with these model folders, in the order the loop runs them."""
    names: list[str] = []
    for folder in MODEL_FOLDERS:
        if folder in folders:
            names += ["vae_decoder", "vae_encoder"] if folder == "vae" else [folder]
    if "controlnet" in names:  # the loop runs it before the UNet
        names.remove("controlnet")
        names.insert(names.index("unet") if "unet" in names else len(names), "controlnet")
    return names


@dataclass
class Checkpoint:
    """A loaded checkpoint: torch modules by folder name (unet, vae, text_encoder, text_encoder_2)."""

    path: Path
    sha256: str
    models: dict[str, torch.nn.Module]
    classes: dict[str, str]
    tokenizer_dirs: dict[str, Path] = field(default_factory=dict)  # tokenizer, tokenizer_2, tokenizer_3
    scheduler_dir: Path | None = None
    model_index: dict[str, Any] | None = None
    omitted: dict[str, str] = field(default_factory=dict)  # model_index entry -> why it is not compiled

    @property
    def is_pipeline(self) -> bool:
        return self.model_index is not None

    def __post_init__(self) -> None:
        # Facts read from the modules up front: the driver frees each module once it is exported.
        unet = self.models.get("unet")
        self.is_sdxl = unet is not None and getattr(unet.config, "addition_embed_type", None) == "text_time"
        self.has_controlnet = "controlnet" in self.models  # its UNet is then compiled with the residual inputs
        # diffusion transformers (fusionc.dit): "sd3" (MMDiT, flow matching) or "pixart" (DiT + T5); None: a UNet
        self.dit_family = {"SD3Transformer2DModel": "sd3", "PixArtTransformer2DModel": "pixart"}.get(
            self.classes.get("transformer", ""))
        self.configs = {name: model.config for name, model in self.models.items()}
        self.available = self.component_names()

    def component_names(self) -> list[str]:
        """Exportable components: text_encoder(_2, _3), unet or transformer, vae_decoder, vae_encoder."""
        if hasattr(self, "available"):
            return list(self.available)
        return component_names_of(self.models)

    def weight_bytes(self, folder: str) -> int:
        """Bytes of a folder's torch weights (0 when absent), without loading a lazy module."""
        if isinstance(self.models, LazyModels):
            return self.models.weight_bytes(folder)
        return module_bytes(self.models.get(folder))

    def shareable(self, allow_pickle: bool = False) -> "Checkpoint":
        """The same checkpoint with its modules loaded again from disk on first use (none held here).

        A fleet loads the checkpoint once, records what every variant needs from torch into the cache (the
        trajectory, the exports), then hands each variant this view: it is small to pickle (configs and paths,
        no weights), and a variant whose stages all hit the cache never loads a module."""
        view = copy.copy(self)
        sizes = {f: self.weight_bytes(f) for f in self.models}
        view.models = LazyModels(self.path, dict(self.classes), self.model_index is not None, allow_pickle, sizes)
        return view


def module_bytes(module: Any) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) if module is not None else 0


class LazyModels(MutableMapping):
    """Torch modules by folder, each loaded from the checkpoint folder when first read (Checkpoint.shareable)."""

    def __init__(self, path: Path, classes: dict[str, str], pipeline: bool, allow_pickle: bool,
                 sizes: dict[str, int]) -> None:
        self.path, self.classes, self.pipeline, self.allow_pickle = Path(path), classes, pipeline, allow_pickle
        self.sizes = dict(sizes)
        self.loaded: dict[str, torch.nn.Module] = {}
        self.loads = 0  # modules read from disk (tests check that a fleet's cached variants read none)

    def __getitem__(self, folder: str) -> torch.nn.Module:
        if folder not in self.sizes:
            raise KeyError(folder)
        if folder not in self.loaded:
            where = self.path / folder if self.pipeline else self.path
            self.loaded[folder] = load_component(where, self.allow_pickle, expected_class=self.classes.get(folder))
            self.loads += 1
        return self.loaded[folder]

    def __setitem__(self, folder: str, module: torch.nn.Module) -> None:
        self.sizes[folder] = module_bytes(module)
        self.loaded[folder] = module

    def __delitem__(self, folder: str) -> None:
        del self.sizes[folder]
        self.loaded.pop(folder, None)

    def pop(self, folder: str, *default: Any) -> Any:  # type: ignore[override]
        """Forget a folder without loading it: returns its module if it was loaded, else None."""
        if folder not in self.sizes:
            if default:
                return default[0]
            raise KeyError(folder)
        del self.sizes[folder]
        return self.loaded.pop(folder, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.sizes))

    def __len__(self) -> int:
        return len(self.sizes)

    def __contains__(self, folder: object) -> bool:
        return folder in self.sizes

    def weight_bytes(self, folder: str) -> int:
        return self.sizes.get(folder, 0)

    def __getstate__(self) -> dict[str, Any]:  # pickled to a Ray worker: paths and sizes, never weights
        return {**self.__dict__, "loaded": {}, "loads": 0}


def load_checkpoint(path: Path | str | None, allow_pickle: bool = False) -> Checkpoint:
    """Load a pipeline folder or a single component folder; None (or `builtin`) loads the built-in tiny pipeline,
    `builtin:controlnet` the same with its trained ControlNet, `builtin:sd3` the trained SD3-shaped pipeline."""
    path = checkpoint_path(path)
    if not path.exists():
        raise BadInputError(f"checkpoint '{path}' does not exist: pass a diffusers pipeline or component folder "
                            f"(or a built-in one: {', '.join(BUILTIN_NAMES)})")
    if not path.is_dir():
        raise BadInputError(f"checkpoint '{path}' is a file: pass the diffusers folder that holds it")
    index_file = path / "model_index.json"
    if index_file.exists():
        index = _read_json(index_file)
        folders = [f for f in MODEL_FOLDERS if f in index and isinstance(index[f], list) and index[f][1]]
        if not folders:
            raise BadInputError(f"{index_file} names none of {', '.join(MODEL_FOLDERS)}: not a text-to-image pipeline")
        _check_no_unsupported_component(index, index_file)
        models, classes = {}, {}
        for folder in folders:
            classes[folder] = index[folder][1]
            models[folder] = load_component(path / folder, allow_pickle, expected_class=index[folder][1])
        omitted = _entries_left_out(index, index_file)
        tokenizers = {t: path / t for t in TOKENIZER_FOLDERS if (path / t).is_dir()}
        scheduler = path / "scheduler" if (path / "scheduler").is_dir() else None
        checkpoint = Checkpoint(path, checkpoint_sha256(path), models, classes, tokenizers, scheduler, index, omitted)
        check_components_fit(checkpoint)
        return checkpoint
    if (path / "config.json").exists():
        cls = _class_name(path)
        folder = SUPPORTED.get(cls, (None, None))[1]
        if folder is None:
            raise UnsupportedError(f"component class '{cls}' in {path}/config.json is not supported: "
                                   f"fusionc compiles {', '.join(SUPPORTED)}")
        return Checkpoint(path, checkpoint_sha256(path), {folder: load_component(path, allow_pickle)}, {folder: cls})
    raise BadInputError(f"'{path}' is not a diffusers checkpoint: it has neither model_index.json nor config.json")


def _fit_pairs(configs: dict[str, Any]) -> Iterator[tuple[str, str, Any, str, str, Any]]:
    """(component, setting, value, other component, its setting, value) that must agree for the pipeline to run."""
    def get(name: str, key: str) -> Any:
        value = getattr(configs[name], key, None) if name in configs else None
        return tuple(value) if isinstance(value, list) else value

    if "controlnet" in configs and "unet" in configs:  # its residuals are added to the UNet's skip connections
        for key in ("in_channels", "block_out_channels", "layers_per_block", "cross_attention_dim"):
            yield "controlnet", key, get("controlnet", key), "unet", key, get("unet", key)
        embedding, vae = get("controlnet", "conditioning_embedding_out_channels"), get("vae", "block_out_channels")
        if embedding and vae and not hasattr(configs["vae"], "encoder_block_out_channels"):  # the control image's
            yield ("controlnet", "downsampling of conditioning_embedding_out_channels", 2 ** (len(embedding) - 1),
                   "vae", "downsampling of block_out_channels", 2 ** (len(vae) - 1))  # pixels -> latents, as the VAE's
    if "transformer" not in configs:
        return
    yield "transformer", "in_channels", get("transformer", "in_channels"), "vae", "latent_channels", get("vae", "latent_channels")
    sd3 = get("transformer", "joint_attention_dim") is not None  # else PixArt: caption_channels
    t5, width = ("text_encoder_3", "joint_attention_dim") if sd3 else ("text_encoder", "caption_channels")
    if getattr(configs.get(t5), "model_type", None) == "t5":  # the T5 tokens are the transformer's text tokens
        yield "transformer", width, get("transformer", width), t5, "d_model", get(t5, "d_model")
    clips = [c for c in ("text_encoder", "text_encoder_2") if getattr(configs.get(c), "model_type", None) == "clip_text_model"]
    if sd3 and len(clips) == 2:  # both CLIPs' pooled projections side by side
        yield ("transformer", "pooled_projection_dim", get("transformer", "pooled_projection_dim"),
               "text_encoder + text_encoder_2", "projection_dim", sum(get(c, "projection_dim") or 0 for c in clips))


def check_components_fit(checkpoint: Checkpoint) -> None:
    """A pipeline whose components were made for different models (a ControlNet of another UNet, a transformer of
    another text encoder or VAE) cannot run: exit 2 naming the setting that differs, before any trajectory (torch
    stopped there on a shape error, exit 3)."""
    for name, key, value, other, other_key, other_value in _fit_pairs(checkpoint.configs):
        if value is not None and other_value is not None and value != other_value:
            raise BadInputError(f"'{name}' of {checkpoint.path} does not fit its '{other}': {key} {value} against "
                                f"{other_key} {other_value} (components made for different models)")
    channels = getattr(checkpoint.configs.get("controlnet"), "conditioning_channels", 3)
    if channels != 3:  # the loop's control images are RGB: the verification outlines, generate's --control-image
        raise BadInputError(f"'controlnet' of {checkpoint.path} takes control images of {channels} channels, and "
                            "fusionc's ControlNet pipelines feed RGB ones (3 channels): not supported")


def _entries_left_out(index: dict[str, Any], index_file: Path) -> dict[str, str]:
    """The model_index entries fusionc does not compile, each with the reason (for the manifest). A denoiser or a
    text encoder it cannot compile is an error naming it: a build without it could not run the pipeline."""
    omitted: dict[str, str] = {}
    for key, value in index.items():
        if key.startswith("_") or key in MODEL_FOLDERS or key in NOT_MODELS:
            continue
        if not (isinstance(value, list) and len(value) == 2 and value[1]):
            continue
        if key in ("transformer", "prior", "decoder") or key.startswith(("text_encoder", "unet", "controlnet")):
            raise UnsupportedError(f"{index_file} names '{key}' ({value[1]}), a denoiser or text encoder fusionc "
                                   f"cannot compile: it compiles {', '.join(MODEL_FOLDERS)}")
        reason = "optional for generation" if key in OPTIONAL_COMPONENTS else "not used by fusionc's text-to-image loop"
        omitted[key] = f"{value[1]}: {reason}, left out of the build"
    return omitted


def structure_folders(path: Path | str | None) -> tuple[Path, dict[str, str]]:
    """(the checkpoint folder, model folder -> class name) from its JSON files alone: what load_structure builds,
    checked the same way (no torch module built, no diffusers imported)."""
    path = checkpoint_path(path)
    if not path.is_dir():
        raise BadInputError(f"checkpoint '{path}' is not a folder: pass a diffusers pipeline or component folder")
    index_file = path / "model_index.json"
    if index_file.exists():
        index = _read_json(index_file)
        folders = {f: index[f][1] for f in MODEL_FOLDERS if f in index and isinstance(index[f], list) and index[f][1]}
    elif (path / "config.json").exists():
        cls = _class_name(path)
        folder = SUPPORTED.get(cls, (None, None))[1]
        if folder is None:
            raise UnsupportedError(f"component class '{cls}' in {path}/config.json is not supported: "
                                   f"fusionc compiles {', '.join(SUPPORTED)}")
        folders = {folder: cls}
    else:
        raise BadInputError(f"'{path}' is not a diffusers checkpoint: it has neither model_index.json nor config.json")
    if not folders:
        raise BadInputError(f"{index_file} names none of {', '.join(MODEL_FOLDERS)}: not a text-to-image pipeline")
    for folder, cls in folders.items():
        where = path / folder if index_file.exists() else path
        if not (where / "config.json").exists():
            raise BadInputError(f"component folder '{where}' {_missing_config(where)}")
        if cls not in SUPPORTED:
            raise UnsupportedError(f"component class '{cls}' in {where} is not supported: "
                                   f"fusionc compiles {', '.join(SUPPORTED)}")
    return path, folders


def load_structure(path: Path | str | None) -> Checkpoint:
    """The checkpoint's modules built from their configs on the meta device: shapes and dtypes, no weight read.

    For `fusionc estimate`: the graph's structure is all the cost model needs, so a 2.6B-parameter UNet costs no
    memory and no disk read (the weight files are not opened, not even hashed: sha256 is left empty).
    """
    path, folders = structure_folders(path)
    pipeline = (path / "model_index.json").exists()
    models = {}
    for folder, cls in folders.items():
        with torch.device("meta"), _skip_weight_init():
            models[folder] = _build_from_config(path / folder if pipeline else path, cls).eval().float()
    return Checkpoint(path, "", models, dict(folders))


def _check_no_unsupported_component(index: dict[str, Any], index_file: Path) -> None:
    """Exit 2 (UnsupportedError) when the pipeline needs a model fusionc cannot compile: a build must never
    silently lack its denoiser or a text encoder. Checked before any weights are read (entries outside
    MODEL_FOLDERS: _entries_left_out)."""
    for folder, entry in index.items():
        if folder not in MODEL_FOLDERS or not isinstance(entry, list) or len(entry) != 2:
            continue
        library, cls = entry
        if library is None or cls is None:
            continue
        if cls not in SUPPORTED:
            raise UnsupportedError(f"component '{folder}' of {index_file.parent} is a {cls}, which fusionc cannot "
                                   f"compile (it compiles {', '.join(SUPPORTED)}): the pipeline cannot run without it")


def load_component(folder: Path, allow_pickle: bool, expected_class: str | None = None) -> torch.nn.Module:
    """Build one model from folder/config.json and load its weights strictly."""
    if not (folder / "config.json").exists():
        raise BadInputError(f"component folder '{folder}' {_missing_config(folder)}")
    cls_name = expected_class or _class_name(folder)
    if cls_name not in SUPPORTED:
        raise UnsupportedError(f"component class '{cls_name}' in {folder} is not supported: "
                               f"fusionc compiles {', '.join(SUPPORTED)}")
    files = weight_files(folder, allow_pickle)
    if all(f.suffix == ".safetensors" for f in files) and _files_bytes(files) >= stream_threshold():
        with _skip_weight_init():  # too large to hold: parameters stay in the files, read block by block (streaming.py)
            return build_streamed(folder, files, lambda: _build_from_config(folder, cls_name))
    state = load_weights(folder, allow_pickle)
    with _skip_weight_init():
        model = _build_from_config(folder, cls_name)
    _load_state_strict(model, state, folder)
    return model.eval().float()


def _build_from_config(folder: Path, cls_name: str) -> torch.nn.Module:
    library = SUPPORTED[cls_name][0]
    try:
        if library == "diffusers":
            import diffusers

            cls = getattr(diffusers, cls_name)
            return cls.from_config(cls.load_config(folder))
        import transformers

        config_cls = getattr(transformers, TRANSFORMERS_CONFIGS[cls_name])
        config = config_cls.from_pretrained(folder)
        return getattr(transformers, cls_name)(config)
    except BadInputError:
        raise
    except Exception as err:  # diffusers/transformers raise many types for a bad config
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadInputError(f"{folder}/config.json is not a valid {cls_name} config: {message}") from err


def weight_files(folder: Path, allow_pickle: bool) -> list[Path]:
    """The weight files of a component folder (sharded safetensors included)."""
    for name in SAFETENSORS:
        index = folder / (name + ".index.json")
        if index.exists():
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            return [folder / s for s in shards]
        if (folder / name).exists():
            return [folder / name]
    pickles = [folder / n for n in PICKLES if (folder / n).exists()]
    if pickles:
        if not allow_pickle:
            raise BadInputError(f"{pickles[0]} is a pickle checkpoint, which can run code when loaded: "
                                "convert it to safetensors, or pass --allow-pickle to load it with weights_only=True")
        return pickles[:1]
    raise BadInputError(f"no weights in '{folder}': expected {SAFETENSORS[0]} or {SAFETENSORS[1]}")


def _files_bytes(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files if f.exists())


def load_weights(folder: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(folder, allow_pickle):
        if not file.exists():
            raise BadInputError(f"weight shard '{file}' named in the index is missing")
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            try:
                state.update(load_file(str(file), backend="pread"))  # not mmap: see the module docstring
            except Exception as err:
                raise BadInputError(f"'{file}' is not a readable safetensors file (truncated or corrupt): {err}") from err
        else:
            try:
                loaded = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as err:
                raise BadInputError(f"'{file}' could not be loaded with weights_only=True "
                                    f"(it holds more than tensors): {str(err).splitlines()[0]}") from err
            state.update(loaded.get("state_dict", loaded) if isinstance(loaded, dict) else {})
    return state


def _load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    expected = model.state_dict()
    _fill_tied_weights(model, state)
    missing = [k for k in expected if k not in state and not k.endswith("position_ids")]
    if missing:
        raise BadInputError(f"weights in '{folder}' miss tensor '{missing[0]}' (and {len(missing) - 1} more): "
                            "the weights do not match config.json")
    for name, tensor in state.items():
        if name not in expected:
            continue
        want = expected[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise BadInputError(f"tensor '{name}' in '{folder}' has shape {tuple(tensor.shape)}, "
                                f"config.json implies {tuple(want.shape)}")
        if not tensor.is_floating_point() and want.is_floating_point():
            raise BadInputError(f"tensor '{name}' in '{folder}' has dtype {tensor.dtype}, expected a float tensor")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise BadInputError(f"tensor '{name}' in '{folder}' holds NaN or Inf values: the checkpoint is damaged")
    # assign: the loaded tensors become the parameters, so the (never initialized) ones are never touched.
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False, assign=True)


def _fill_tied_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Tied parameters are saved once (T5's encoder.embed_tokens is `shared`): give every name of a tied
    parameter the saved tensor, so loading with assign=True keeps them one tensor."""
    names_by_param: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_by_param.setdefault(id(param), []).append(name)
    for names in names_by_param.values():
        saved = [n for n in names if n in state]
        for name in names if saved else []:
            state.setdefault(name, state[saved[0]])


@contextlib.contextmanager
def _skip_weight_init() -> Iterator[None]:
    """Build modules without random initialization: every weight is then loaded (strictly) from the file.

    At SD-1.5 scale the default init costs seconds and touches 3.4 GB that is thrown away at once.
    """
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for name in names:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, func in saved.items():
            setattr(torch.nn.init, name, func)


def _missing_config(folder: Path) -> str:
    """Why a component folder has no config.json, for its error: a file in its place is most likely a symlink that
    git checked out as a text file (Windows without core.symlinks), as the built-in SD3 and ControlNet pipelines'
    links to tiny_sd's folders are."""
    if folder.is_file():
        return ("is a file, not a folder: if it is a symlink that git checked out as text (Windows without "
                "symlinks), clone again with `git clone -c core.symlinks=true` or install fusionc from a wheel")
    return "has no config.json"


def _class_name(folder: Path) -> str:
    config = _read_json(folder / "config.json")
    if "_class_name" in config:
        return str(config["_class_name"])
    architectures = config.get("architectures") or []
    if architectures:
        return str(architectures[0])
    raise BadInputError(f"{folder}/config.json names no model class (_class_name or architectures)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BadInputError(f"'{path}' is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise BadInputError(f"'{path}' must hold a JSON object")
    return data


def recorded_checkpoint(recorded: dict[str, Any]) -> Path:
    """The checkpoint folder a build's manifest names (`checkpoint.path`); when that folder is gone and its sha256 is
    a built-in pipeline's (the build was made by another install of fusionc: another venv, an upgrade), that
    built-in pipeline of this install."""
    path = Path(recorded.get("path", ""))
    if path.exists() or not recorded.get("sha256"):
        return path
    return next((b for b in BUILTIN_NAMES.values() if checkpoint_sha256(b) == recorded["sha256"]), path)


def checkpoint_sha256(path: Path) -> str:
    """A content hash over every file of the checkpoint (relative path + bytes), streamed."""
    digest = hashlib.sha256()
    files = [Path(root) / name for root, _, names in os.walk(path, followlinks=True) for name in names]  # links too
    # ordered by path components, case-sensitively: the same hash on every OS (Windows paths compare ignoring case)
    for file in sorted((p for p in files if p.is_file() and "__pycache__" not in p.parts),
                       key=lambda p: p.relative_to(path).parts):
        digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()
