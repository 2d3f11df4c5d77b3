"""Make auto_LiRPA 0.3 (Sept 2022, the only release on PyPI) work on torch 2.13/2.14 and numpy 2.

Nothing here imports auto_LiRPA (or torch) at module import time: call
:func:`import_auto_lirpa` to get the patched ``auto_LiRPA`` package. It is idempotent and
thread-safe, and every other module of ``qa_lirpa`` should import auto_LiRPA through it.

Fixes (each one is applied at most once, and only when the running stack needs it; the
names of the applied ones are the keys of :data:`APPLIED_FIXES`):

Before the first ``import auto_LiRPA``:

1. ``numpy_arraysetops``: numpy 2 removed the module ``numpy.lib.arraysetops``, from which
   ``auto_LiRPA.operators.base`` imports ``isin``. A stand-in module with ``isin = numpy.isin``
   is registered under that name.
2. ``set_opset_version``: ``torch.onnx.symbolic_helper._set_opset_version`` no longer exists
   (``auto_LiRPA.parse_graph`` imports it and calls it with 12 before converting a trace to
   an ONNX graph). A replacement sets ``export_onnx_opset_version`` on the TorchScript
   exporter's ``GLOBALS`` object.
3. ``node_getitem``: ``torch._C.Node`` is no longer subscriptable, but ``parse_graph`` reads
   node attributes as ``node[name]``. ``Node.__getitem__`` is given back, dispatching on
   ``node.kindOf(name)`` (``"f"``, ``"i"``, ``"s"``, ``"t"``, ``"fs"``, ``"is"``, ...).

After the import:

4. ``named_members``: ``BoundedModule._named_members`` (and ``BoundDataParallel``'s) do not
   accept the ``remove_duplicate`` keyword that ``nn.Module.named_parameters`` passes, so
   ``bounded_module.parameters()`` raised ``TypeError`` (and any optimizer built on it).
   They are wrapped to accept and drop it (auto_LiRPA always removes duplicates).
5. ``avgpool_contiguous``: CROWN through ``AvgPool`` followed by ``Flatten``/``Linear`` fails
   with "view size is not compatible with input tensor's size and stride", because the A
   matrices reaching ``BoundAveragePool.bound_backward`` may be non-contiguous and it calls
   ``.view`` on them. The method is wrapped to make Tensor A matrices contiguous first.
6. ``relu_alpha_grad``: since torch 2.14 the gradient of ``clamp`` exactly at its bounds is 0
   (it was 1). alpha-CROWN's ReLU slopes start exactly at 0 or 1 and go through
   ``clamp(alpha, 0, 1)`` in ``BoundRelu._relu_mask_alpha``, so they never move and
   ``method="CROWN-Optimized"`` silently returned plain CROWN bounds. The method is replaced
   by one whose projection onto [0, 1] has gradient 1 on the closed interval [0, 1] and 0
   outside (the pre-2.14 behaviour); it is applied only when a probe shows the new gradient.
7. ``mul_patches_scalar``: in the default ``conv_mode="patches"``, CROWN through ``x * c``
   with a one-element constant (a fixed-point input rescale) before a convolution fails an
   assertion in ``BoundMul._multiply_by_const``, which expects a 4-d constant. A one-element
   constant now scales the patches directly (same bounds as ``conv_mode="matrix"``).
8. ``maxpool_dtype``: ``BoundMaxPool.bound_backward`` builds its slope and offset tensors with
   ``torch.zeros(shape)`` in the default dtype (float32), so CROWN through a max pool of a
   float64 model fails in ``torch.scatter`` ("Expected self.dtype to be equal to src.dtype").
   The method is wrapped to run with the default dtype set to its input bounds' dtype (and
   restored afterwards).
9. ``alpha_start_nodes``: with ``sparse_intermediate_bounds`` (auto_LiRPA's default),
   ``get_alpha_crown_start_nodes`` asserts, for an optimisable activation other than ReLU that
   follows a convolution in patches mode, a flag that only the ReLU branch sets, so alpha-CROWN
   failed on any conv net whose rounding steps are optimisable (qa_lirpa.operators.step). Sparse
   start nodes are a ReLU-only feature there; the method is wrapped to run with the option off
   for the other activations (ReLU is unchanged).
10. ``alpha_float64``: in its last iteration ``get_optimized_bounds`` converts the best bounds so
    far to torch's default dtype (float32) and then writes the new float64 bounds into them
    ("Index put requires the source and destination dtypes match"), so alpha-CROWN of a float64
    model failed as soon as its last step improved a bound. The method is wrapped to run with
    the default dtype set to the input's floating dtype (restored afterwards).

Side effects that remain process-wide once auto_LiRPA is imported (by design of auto_LiRPA,
not undone here):

* The TorchScript profiling executor and profiling mode are disabled
  (``torch._C._jit_set_profiling_executor(False)``, ``torch._C._jit_set_profiling_mode(False)``),
  which changes how every ``torch.jit.script`` function in the process is executed.
* Every time a ``BoundedModule`` is built, the TorchScript ONNX exporter's opset is set to 12
  (``GLOBALS.export_onnx_opset_version``); a later ``torch.onnx.export`` without an explicit
  ``opset_version`` would see it.
* Fixes 2 and 3 patch ``torch.onnx.symbolic_helper`` and ``torch._C.Node`` for everybody.

Side effects of the import that *are* contained here: auto_LiRPA calls
``warnings.simplefilter("once")`` (twice) and ``logging.basicConfig(stream=sys.stdout)``, and
its ``@torch.jit.script`` functions warn while being compiled; the import runs inside
``warnings.catch_warnings`` (the caller's warning filters are unchanged afterwards), handlers
that ``basicConfig`` adds to the root logger are removed again, and torch's
"No CUDA runtime is found" message (``torch.utils.cpp_extension`` logger, CUDA builds of torch
on machines without a GPU) is silenced during the import only.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import sys
import threading
import types
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

__all__ = ["APPLIED_FIXES", "FIX_NAMES", "import_auto_lirpa", "original"]

#: All fix names, in the order they are applied.
FIX_NAMES: Tuple[str, ...] = (
    "numpy_arraysetops",
    "set_opset_version",
    "node_getitem",
    "named_members",
    "avgpool_contiguous",
    "relu_alpha_grad",
    "mul_patches_scalar",
    "maxpool_dtype",
    "alpha_start_nodes",
    "alpha_float64",
)

#: Fixes that were applied in this process: name -> one-line description. Fixes that the
#: running torch/numpy/auto_LiRPA do not need are absent.
APPLIED_FIXES: Dict[str, str] = {}

# Unpatched objects replaced by a fix (fix name -> object), for tests and diagnostics.
_ORIGINALS: Dict[str, Any] = {}

# Attribute set on every wrapper installed here, holding the wrapped original.
_WRAPPED_ATTR = "__qa_lirpa_original__"

_LOCK = threading.RLock()
_AUTO_LIRPA: Optional[types.ModuleType] = None


def import_auto_lirpa() -> types.ModuleType:
    """Import auto_LiRPA with all needed compatibility fixes applied, and return it.

    Idempotent and thread-safe: the fixes and the import happen on the first call only.
    The caller's ``warnings`` filters are left as they were, and nothing is printed.

    Returns:
        The ``auto_LiRPA`` package.

    Raises:
        ImportError: auto_LiRPA is not installed, or fails to import even with the fixes.
    """
    global _AUTO_LIRPA
    with _LOCK:
        if _AUTO_LIRPA is not None:
            return _AUTO_LIRPA
        _apply_pre_import_fixes()
        module = _import_quietly()
        _apply_post_import_fixes()
        _AUTO_LIRPA = module
        return module


def original(fix_name: str) -> Any:
    """Return the object that fix ``fix_name`` replaced (for tests and diagnostics).

    Args:
        fix_name: One of :data:`FIX_NAMES`.

    Returns:
        The unpatched function or method (for fix 4, a dict mapping each patched class to
        its original ``_named_members``).

    Raises:
        KeyError: The fix was not applied in this process, or replaced nothing.
    """
    return _ORIGINALS[fix_name]


# ----------------------------------------------------------------------------------------
# Import with the noise contained.
# ----------------------------------------------------------------------------------------


def _import_quietly() -> types.ModuleType:
    """Import auto_LiRPA without changing warning filters, root logging, or printing."""
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    saved_level = cpp_logger.level
    root = logging.getLogger()
    saved_root_handlers = list(root.handlers)
    cpp_logger.setLevel(logging.ERROR)
    try:
        # record=True routes every warning raised during the import into a list instead of
        # stderr, even after auto_LiRPA replaces the filters by "once"; leaving the block
        # restores the caller's filter list and showwarning.
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("ignore")
            module = importlib.import_module("auto_LiRPA")
    finally:
        cpp_logger.setLevel(saved_level)
        for handler in list(root.handlers):
            if handler not in saved_root_handlers:
                root.removeHandler(handler)
    return module


# ----------------------------------------------------------------------------------------
# Fixes 1-3: before the import.
# ----------------------------------------------------------------------------------------


def _apply_pre_import_fixes() -> None:
    for name, fix in (
        ("numpy_arraysetops", _fix_numpy_arraysetops),
        ("set_opset_version", _fix_set_opset_version),
        ("node_getitem", _fix_node_getitem),
    ):
        if name not in APPLIED_FIXES:
            description = fix()
            if description:
                APPLIED_FIXES[name] = description


def _fix_numpy_arraysetops() -> Optional[str]:
    """Fix 1: provide ``numpy.lib.arraysetops.isin`` on numpy 2."""
    import numpy

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            existing = importlib.import_module("numpy.lib.arraysetops")
        if hasattr(existing, "isin"):
            return None
    except ImportError:
        existing = None

    if existing is None:
        stand_in = types.ModuleType(
            "numpy.lib.arraysetops",
            "Stand-in for the module numpy 2 removed (installed by qa_lirpa.compat).",
        )
        sys.modules["numpy.lib.arraysetops"] = stand_in
        setattr(numpy.lib, "arraysetops", stand_in)
    else:
        stand_in = existing
    stand_in.isin = numpy.isin  # type: ignore[attr-defined]
    return "numpy.lib.arraysetops.isin = numpy.isin"


def _find_onnx_globals(helper: types.ModuleType) -> Optional[Any]:
    """Locate the TorchScript ONNX exporter's GLOBALS object in this torch, if any."""
    candidates = (
        "torch.onnx._internal.torchscript_exporter._globals",  # torch 2.13/2.14 (tested)
        "torch.onnx._globals",  # older torch releases
    )
    for module_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found = getattr(module, "GLOBALS", None)
        if found is not None and hasattr(found, "export_onnx_opset_version"):
            return found
    # Whatever the symbolic helpers themselves read.
    for module in (helper, sys.modules.get("torch.onnx._internal.torchscript_exporter.symbolic_helper")):
        found = getattr(module, "GLOBALS", None)
        if found is not None and hasattr(found, "export_onnx_opset_version"):
            return found
    return None


def _fix_set_opset_version() -> Optional[str]:
    """Fix 2: provide ``torch.onnx.symbolic_helper._set_opset_version``."""
    # Import the module by its name (as auto_LiRPA will), not via the attribute of
    # torch.onnx: in torch 2.14 the attribute is the internal module until the submodule
    # torch/onnx/symbolic_helper.py (a star-import shim without private names) is imported.
    helper = importlib.import_module("torch.onnx.symbolic_helper")
    if hasattr(helper, "_set_opset_version"):
        return None
    onnx_globals = _find_onnx_globals(helper)

    def _set_opset_version(opset_version: int) -> None:
        """Set the TorchScript ONNX exporter's opset (installed by qa_lirpa.compat)."""
        if onnx_globals is not None:
            onnx_globals.export_onnx_opset_version = opset_version

    helper._set_opset_version = _set_opset_version  # type: ignore[attr-defined]
    if onnx_globals is None:
        return "torch.onnx.symbolic_helper._set_opset_version added as a no-op (GLOBALS not found)"
    return "torch.onnx.symbolic_helper._set_opset_version sets GLOBALS.export_onnx_opset_version"


def _node_getitem(node: Any, attribute: str) -> Any:
    """``node[attribute]`` for ``torch._C.Node``, dispatching on the attribute's kind."""
    return getattr(node, node.kindOf(attribute))(attribute)


def _fix_node_getitem() -> Optional[str]:
    """Fix 3: make ``torch._C.Node`` subscriptable again."""
    import torch

    node_cls = torch._C.Node
    if hasattr(node_cls, "__getitem__"):
        return None
    node_cls.__getitem__ = _node_getitem  # type: ignore[attr-defined]
    return "torch._C.Node.__getitem__(k) = node.<kindOf(k)>(k)"


# ----------------------------------------------------------------------------------------
# Fixes 4-8: after the import.
# ----------------------------------------------------------------------------------------


def _apply_post_import_fixes() -> None:
    for name, fix in (
        ("named_members", _fix_named_members),
        ("avgpool_contiguous", _fix_avgpool_contiguous),
        ("relu_alpha_grad", _fix_relu_alpha_grad),
        ("mul_patches_scalar", _fix_mul_patches_scalar),
        ("maxpool_dtype", _fix_maxpool_dtype),
        ("alpha_start_nodes", _fix_alpha_start_nodes),
        ("alpha_float64", _fix_alpha_float64),
    ):
        if name not in APPLIED_FIXES:
            description = fix()
            if description:
                APPLIED_FIXES[name] = description


def _accepts_keyword(function: Callable[..., Any], keyword: str) -> bool:
    try:
        parameters = inspect.signature(function, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):
        return True  # cannot tell; leave it alone
    return any(
        p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )


def _wrap_named_members(cls: type) -> Optional[Callable[..., Any]]:
    """Wrap ``cls._named_members`` to drop ``remove_duplicate``; return the original."""
    member = cls.__dict__.get("_named_members")
    if member is None or hasattr(member, _WRAPPED_ATTR):
        return None
    if _accepts_keyword(member, "remove_duplicate"):
        return None

    @functools.wraps(member)
    def _named_members(
        self: Any,
        get_members_fn: Callable[[Any], Any],
        prefix: str = "",
        recurse: bool = True,
        remove_duplicate: bool = True,
    ) -> Any:
        # auto_LiRPA's version always skips duplicates (and translates names).
        del remove_duplicate
        return member(self, get_members_fn, prefix, recurse)

    setattr(_named_members, _WRAPPED_ATTR, member)
    cls._named_members = _named_members  # type: ignore[attr-defined]
    return member


def _fix_named_members() -> Optional[str]:
    """Fix 4: let ``BoundedModule.parameters()`` (and buffers) work on torch >= 2.0."""
    from auto_LiRPA import BoundDataParallel, BoundedModule

    replaced = {}
    for cls in (BoundedModule, BoundDataParallel):
        previous = _wrap_named_members(cls)
        if previous is not None:
            replaced[cls] = previous
    if not replaced:
        return None
    _ORIGINALS["named_members"] = replaced
    names = ", ".join(cls.__name__ for cls in replaced)
    return f"_named_members of {names} accept and drop remove_duplicate"


def _fix_avgpool_contiguous() -> Optional[str]:
    """Fix 5: contiguous A matrices into ``BoundAveragePool.bound_backward``."""
    from auto_LiRPA.operators.pooling import BoundAveragePool

    import torch

    member = BoundAveragePool.__dict__.get("bound_backward")
    if member is None or hasattr(member, _WRAPPED_ATTR):
        return None

    @functools.wraps(member)
    def bound_backward(self: Any, last_lA: Any, last_uA: Any, *args: Any, **kwargs: Any) -> Any:
        # .contiguous() returns the tensor itself when it already is contiguous.
        if isinstance(last_lA, torch.Tensor):
            last_lA = last_lA.contiguous()
        if isinstance(last_uA, torch.Tensor):
            last_uA = last_uA.contiguous()
        return member(self, last_lA, last_uA, *args, **kwargs)

    setattr(bound_backward, _WRAPPED_ATTR, member)
    BoundAveragePool.bound_backward = bound_backward  # type: ignore[method-assign]
    _ORIGINALS["avgpool_contiguous"] = member
    return "BoundAveragePool.bound_backward makes Tensor A matrices contiguous"


def _fix_maxpool_dtype() -> Optional[str]:
    """Fix 8: ``BoundMaxPool.bound_backward`` in the dtype of its input bounds."""
    from auto_LiRPA.operators.pooling import BoundMaxPool

    import torch

    member = BoundMaxPool.__dict__.get("bound_backward")
    if member is None or hasattr(member, _WRAPPED_ATTR):
        return None

    @functools.wraps(member)
    def bound_backward(self: Any, last_lA: Any, last_uA: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        dtype = getattr(getattr(x, "lower", None), "dtype", None)
        before = torch.get_default_dtype()
        if dtype is None or not dtype.is_floating_point or dtype == before:
            return member(self, last_lA, last_uA, x, *args, **kwargs)
        torch.set_default_dtype(dtype)
        try:
            return member(self, last_lA, last_uA, x, *args, **kwargs)
        finally:
            torch.set_default_dtype(before)

    setattr(bound_backward, _WRAPPED_ATTR, member)
    BoundMaxPool.bound_backward = bound_backward  # type: ignore[method-assign]
    _ORIGINALS["maxpool_dtype"] = member
    return "BoundMaxPool.bound_backward runs in the dtype of its input bounds"


def _clamp_has_zero_grad_at_bounds() -> bool:
    """True when d clamp(x, 0, 1)/dx is 0 at x = 0 and x = 1 (torch >= 2.14)."""
    import torch

    probe = torch.tensor([0.0, 1.0], requires_grad=True)
    (grad,) = torch.autograd.grad(torch.clamp(probe, min=0.0, max=1.0).sum(), probe)
    return bool((grad == 0).any())


def _project_unit_interval(alpha: Any) -> Any:
    """Clamp to [0, 1] with gradient 1 on the closed interval [0, 1], 0 outside it."""
    import torch

    inside = (alpha >= 0.0) & (alpha <= 1.0)
    return torch.where(inside, alpha, alpha.clamp(min=0.0, max=1.0))


def _relu_mask_alpha(
    lower: Any, upper: Any, lb_lower_d: Optional[Any], ub_lower_d: Optional[Any]
) -> Tuple[Optional[Any], Optional[Any], Any]:
    """``BoundRelu._relu_mask_alpha`` of auto_LiRPA 0.3, keeping the alphas' gradient.

    Stable-active neurons (lower >= 0) get slope 1, stable-inactive ones (upper <= 0) slope
    0, unstable ones their alpha projected onto [0, 1]. Also returns whether every neuron is
    stable-inactive.
    """
    active = (lower >= 0).to(lower.dtype)
    inactive = upper <= 0
    all_inactive = inactive.all()
    unstable = (1.0 - active) * (1.0 - inactive.to(upper.dtype))
    if lb_lower_d is not None:
        lb_lower_d = _project_unit_interval(lb_lower_d) * unstable + active
    if ub_lower_d is not None:
        ub_lower_d = _project_unit_interval(ub_lower_d) * unstable + active
    return lb_lower_d, ub_lower_d, all_inactive


def _fix_relu_alpha_grad() -> Optional[str]:
    """Fix 6: let alpha-CROWN's ReLU slopes move away from exactly 0 or 1."""
    from auto_LiRPA.operators.activation import BoundRelu

    member = BoundRelu.__dict__.get("_relu_mask_alpha")
    if member is None or not isinstance(member, staticmethod):
        return None
    if getattr(member.__func__, _WRAPPED_ATTR, None) is not None:
        return None
    if not _clamp_has_zero_grad_at_bounds():
        return None

    setattr(_relu_mask_alpha, _WRAPPED_ATTR, member.__func__)
    BoundRelu._relu_mask_alpha = staticmethod(_relu_mask_alpha)  # type: ignore[assignment]
    _ORIGINALS["relu_alpha_grad"] = member.__func__
    return "BoundRelu._relu_mask_alpha keeps gradient 1 for alphas in [0, 1]"


def _fix_alpha_start_nodes() -> Optional[str]:
    """Fix 9: alpha-CROWN start nodes of non-ReLU optimisable activations after a patches-mode
    convolution (see the module docstring)."""
    from auto_LiRPA import bound_general
    from auto_LiRPA.operators import BoundRelu

    cls = bound_general.BoundedModule
    original = cls.__dict__.get("get_alpha_crown_start_nodes")
    if original is None or hasattr(original, _WRAPPED_ATTR):
        return None

    @functools.wraps(original)
    def get_alpha_crown_start_nodes(self: Any, node: Any, *args: Any, **kwargs: Any) -> Any:
        opts = self.bound_opts
        if isinstance(node, BoundRelu) or not opts.get("sparse_intermediate_bounds", False):
            return original(self, node, *args, **kwargs)
        opts["sparse_intermediate_bounds"] = False
        try:
            return original(self, node, *args, **kwargs)
        finally:
            opts["sparse_intermediate_bounds"] = True

    setattr(get_alpha_crown_start_nodes, _WRAPPED_ATTR, original)
    cls.get_alpha_crown_start_nodes = get_alpha_crown_start_nodes
    _ORIGINALS["alpha_start_nodes"] = original
    return "BoundedModule.get_alpha_crown_start_nodes skips sparse start nodes for non-ReLU activations"


def _fix_alpha_float64() -> Optional[str]:
    """Fix 10: alpha-CROWN of float64 models (see the module docstring)."""
    from auto_LiRPA import bound_general

    import torch

    cls = bound_general.BoundedModule
    original = cls.__dict__.get("get_optimized_bounds")
    if original is None or hasattr(original, _WRAPPED_ATTR):
        return None

    @functools.wraps(original)
    def get_optimized_bounds(self: Any, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        dtypes = [t.dtype for t in (x if isinstance(x, (tuple, list)) else (x,))
                  if isinstance(t, torch.Tensor) and t.is_floating_point()]
        before = torch.get_default_dtype()
        if not dtypes or dtypes[0] == before:
            return original(self, x, *args, **kwargs)
        torch.set_default_dtype(dtypes[0])
        try:
            return original(self, x, *args, **kwargs)
        finally:
            torch.set_default_dtype(before)

    setattr(get_optimized_bounds, _WRAPPED_ATTR, original)
    cls.get_optimized_bounds = get_optimized_bounds
    _ORIGINALS["alpha_float64"] = original
    return "BoundedModule.get_optimized_bounds runs with the input's dtype as torch's default"


def _fix_mul_patches_scalar() -> Optional[str]:
    """Fix 7: CROWN in patches mode through a multiplication by a scalar constant.

    ``BoundMul._multiply_by_const`` asserts a 4-d constant when the A matrix is a ``Patches``
    object, so a convolution after ``x * c`` (e.g. a fixed-point input rescale) fails in the default
    conv mode. A one-element constant simply scales the patches.
    """
    from auto_LiRPA.operators.bivariate import BoundMul
    from auto_LiRPA.patches import Patches

    import torch

    member = BoundMul.__dict__.get("_multiply_by_const")
    original = getattr(member, "__func__", member)
    if original is None or hasattr(original, _WRAPPED_ATTR):
        return None

    def _multiply_by_const(x: Any, const: Any) -> Any:
        if isinstance(x, Patches) and isinstance(const, torch.Tensor) and const.numel() == 1:
            return x.create_similar(x.patches * const.reshape(()))
        return original(x, const)

    setattr(_multiply_by_const, _WRAPPED_ATTR, original)
    BoundMul._multiply_by_const = staticmethod(_multiply_by_const)  # type: ignore[assignment]
    _ORIGINALS["mul_patches_scalar"] = original
    return "BoundMul._multiply_by_const scales Patches by one-element constants"
