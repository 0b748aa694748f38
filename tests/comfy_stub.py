"""A small fake of the ComfyUI modules the nodes use, for fast unit tests (never for the real host).

It provides ``comfy.utils.ProgressBar``, ``comfy.model_management`` (device queries,
``soft_empty_cache``, interruption, ``load_models_gpu`` with ComfyUI's bookkeeping of loaded
models), ``comfy.model_patcher`` (a patcher that records what is done to it), the patcher
callback names of ``comfy.patcher_extension`` and ``folder_paths`` (model folders). It records
what the nodes do with them in a :class:`StubState`, and loads the pack root as the package
``comfyui_vtoonify`` the way ComfyUI does (``custom_nodes/<pack>/__init__.py``), without putting
the pack on ``sys.path``.

Tests use it through the ``fake_comfy`` / ``fake_comfy_empty`` fixtures of ``tests/conftest.py``,
which call::

    state = comfy_stub.install(models_dir)       # fake modules in sys.modules
    pack = comfy_stub.load_pack()                 # the pack, as ComfyUI imports it
    ...
    comfy_stub.uninstall()                        # previous sys.modules entries restored
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui_vtoonify"
STUB_MODULES = ("comfy", "comfy.utils", "comfy.model_management", "comfy.model_patcher",
                "comfy.patcher_extension", "folder_paths")


class InterruptProcessingException(BaseException):
    """As in ComfyUI: a BaseException, so ``except Exception`` does not swallow it."""


@dataclass
class StubState:
    """What the nodes did with the fake ComfyUI."""

    progress: list = field(default_factory=list)          # (value, total) of every update
    interrupt_checks: int = 0
    interrupt_on: Optional[int] = None                    # raise on this check (1-based)
    soft_empty_cache: int = 0
    load_models_gpu: list = field(default_factory=list)   # (patchers, kwargs)
    current_loaded_models: list = field(default_factory=list)


class _ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        STATE.progress.append((0, total))

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = value
        STATE.progress.append((value, self.total))

    def update(self, value):
        self.update_absolute(self.current + value, self.total)


class _LoadedModel:
    """As ComfyUI's LoadedModel: a weak reference to the patcher (a clone that dies hands its entry to
    its parent), and to the network once loaded, whose collection drops the entry (``cleanup_models``)."""

    def __init__(self, patcher):
        self._set_model(patcher)
        self.real_model = None
        self.model_finalizer = None

    def _set_model(self, patcher):
        self._model = weakref.ref(patcher)
        if patcher.parent is not None:
            self._parent = weakref.ref(patcher.parent)
            weakref.finalize(patcher, self._switch_parent).atexit = False

    def _switch_parent(self):
        parent = self._parent()
        if parent is not None:
            self._set_model(parent)

    @property
    def model(self):
        return self._model()

    def model_load(self):
        network = self.model.model
        self.real_model = weakref.ref(network)
        self.model_finalizer = weakref.finalize(network, _cleanup_models)
        self.model_finalizer.atexit = False

    def model_unload(self, memory_to_free=None, unpatch_weights=True):
        self.model.detach(unpatch_weights)
        self.model_finalizer.detach()
        self.model_finalizer = None
        self.real_model = None
        return True


def _cleanup_models():
    """ComfyUI's cleanup_models: entries whose network was collected leave the list."""
    loaded = STATE.current_loaded_models
    loaded[:] = [lm for lm in loaded if lm.real_model is None or lm.real_model() is not None]


class CallbacksMP:
    """The patcher callback names of ``comfy.patcher_extension`` that the pack uses."""

    ON_DETACH = "on_detach_after"


class FakeModelPatcher:
    """Enough of ComfyUI's ModelPatcher for the wiring tests: clones share the model (``is_clone``),
    ``detach`` runs the ON_DETACH callbacks and is recorded (``detaches``: each ``unpatch_all``).
    Devices are not moved."""

    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.parent = None
        self.detaches: list = []
        self.callbacks: dict = {}

    def clone(self):
        n = FakeModelPatcher(self.model, self.load_device, self.offload_device)
        n.parent = self
        n.callbacks = {k: list(v) for k, v in self.callbacks.items()}
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def add_callback(self, call_type, callback):
        self.callbacks.setdefault(call_type, []).append(callback)

    def detach(self, unpatch_all=True):
        self.detaches.append(unpatch_all)
        for callback in self.callbacks.get(CallbacksMP.ON_DETACH, []):
            callback(self, unpatch_all)
        return self.model


STATE = StubState()
_SAVED: dict = {}


def _model_management(state: StubState) -> types.ModuleType:
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.OOM_EXCEPTION = torch.cuda.OutOfMemoryError

    def throw_exception_if_processing_interrupted():
        state.interrupt_checks += 1
        if state.interrupt_on is not None and state.interrupt_checks >= state.interrupt_on:
            state.interrupt_on = None
            raise InterruptProcessingException()

    def soft_empty_cache(force=False):
        state.soft_empty_cache += 1

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        """ComfyUI's bookkeeping: one entry per network; loading a patcher first takes the entries of
        its clones (itself included) off the list and detaches them without moving their weights."""
        state.load_models_gpu.append((list(models), dict(memory_required=memory_required,
                                                         force_full_load=force_full_load)))
        loaded = state.current_loaded_models
        for p in dict.fromkeys(models):
            entry = next((lm for lm in loaded if lm.model is p), None) or _LoadedModel(p)
            for lm in [lm for lm in loaded if p.is_clone(lm.model)]:
                loaded.remove(lm)
                lm.model.detach(unpatch_all=False)
                lm.model_finalizer.detach()
            entry.model_load()
            loaded.insert(0, entry)

    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.soft_empty_cache = soft_empty_cache
    mm.load_models_gpu = load_models_gpu
    mm.current_loaded_models = state.current_loaded_models
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.intermediate_device = lambda: torch.device("cpu")
    mm.intermediate_dtype = lambda: torch.float32
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.should_use_fp16 = lambda device=None, *a, **k: True
    return mm


def _folder_paths(models_dir: Path) -> types.ModuleType:
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models_dir)
    fp.supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
    fp.folder_names_and_paths = {}

    def add_model_folder_path(folder_name, full_folder_path, is_default=False):
        if folder_name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[folder_name][0]
            if full_folder_path not in paths:
                paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
        else:
            fp.folder_names_and_paths[folder_name] = ([full_folder_path], set())

    def get_folder_paths(folder_name):
        return fp.folder_names_and_paths[folder_name][0][:]

    def get_filename_list(folder_name):
        paths, exts = fp.folder_names_and_paths[folder_name]
        out = set()
        for root in paths:
            for dirpath, _dirs, files in os.walk(root, followlinks=True):
                for f in files:
                    rel = os.path.relpath(os.path.join(dirpath, f), root)
                    if not exts or os.path.splitext(rel)[1].lower() in exts:
                        out.add(rel)
        return sorted(out)

    def get_full_path(folder_name, filename):
        if folder_name not in fp.folder_names_and_paths:
            return None
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for root in fp.folder_names_and_paths[folder_name][0]:
            full = os.path.join(root, filename)
            if os.path.isfile(full):
                return full
        return None

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = get_folder_paths
    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    return fp


def install(models_dir: Path) -> StubState:
    """Put the fake modules into ``sys.modules`` (remembering what was there) and reset the state."""
    global STATE
    if not _SAVED:
        for name in STUB_MODULES:
            _SAVED[name] = sys.modules.get(name)
    STATE = StubState()
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []  # a package
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = _ProgressBar
    mm = _model_management(STATE)
    modules = {"comfy": comfy, "comfy.utils": utils, "comfy.model_management": mm,
               "folder_paths": _folder_paths(Path(models_dir))}
    comfy.utils, comfy.model_management = utils, mm
    patcher = types.ModuleType("comfy.model_patcher")
    patcher.ModelPatcher = FakeModelPatcher
    extension = types.ModuleType("comfy.patcher_extension")
    extension.CallbacksMP = CallbacksMP
    modules["comfy.model_patcher"], modules["comfy.patcher_extension"] = patcher, extension
    comfy.model_patcher, comfy.patcher_extension = patcher, extension
    for name in STUB_MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(modules)
    return STATE


def share_core(name: str = PACK_NAME) -> None:
    """Make the pack's relative imports of ``<pack>.vtoonify_core...`` give the modules the tests import
    as ``vtoonify_core...``, so the core is imported once and its classes are the same objects."""
    import pkgutil

    import vtoonify_core

    for info in pkgutil.walk_packages(vtoonify_core.__path__, "vtoonify_core."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    for key, module in list(sys.modules.items()):
        if key == "vtoonify_core" or key.startswith("vtoonify_core."):
            sys.modules[f"{name}.{key}"] = module


def load_pack(name: str = PACK_NAME) -> types.ModuleType:
    """Import the pack root as ComfyUI does (a package named after its folder), sharing the core
    the tests import (:func:`share_core`)."""
    if name in sys.modules:
        return sys.modules[name]
    share_core(name)
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def uninstall(name: str = PACK_NAME) -> None:
    """Remove the fake modules and the loaded pack; restore what was in ``sys.modules`` before."""
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    for mod_name, old in _SAVED.items():
        if old is None:
            sys.modules.pop(mod_name, None)
        else:
            sys.modules[mod_name] = old
    _SAVED.clear()
