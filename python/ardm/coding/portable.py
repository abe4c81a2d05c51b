"""Network evaluation that gives the same bits on every CPU: the coder's view of a network.

A blob decodes only if the decoder's network outputs equal the encoder's bit for bit. Plain
float32 evaluation does not give that across machines: torch picks its CPU kernels by the
instruction set (plain, AVX2, AVX-512; oneDNN's products likewise) and release, and those sum in
different orders and compute ``exp``, ``erf``, ``sin`` with different approximations. Under
:func:`portable_evaluation` every torch function the nets call is either

* **exact already**: IEEE-754 basic arithmetic (``+ - * /``, ``sqrt``), comparisons, selection,
  indexing, copying and reshaping, maxima, integer arithmetic: one correctly rounded result per
  element, whatever the kernel; or
* **replaced** by a form that is exact in any summation order:

  - products (``linear``, ``matmul``, ``conv1d``/``conv2d``, attention) round their operands to
    integers under a power-of-two scale per row of the left operand and per column of the right
    one (the scale of a row's largest magnitude; ``52 - ceil(log2 k)`` bits between the two for a
    contraction of length ``k``) and multiply them in float64, where every product and partial
    sum is an integer below ``2^52``, exact whatever order, blocking or instruction set the GEMM
    uses; the result is scaled back by powers of two (exact);
  - sums (``sum``, ``mean``, the statistics of ``layer_norm`` / ``group_norm``, softmax
    denominators) round their terms to integers under a power-of-two scale per reduced slice
    (``52 - ceil(log2 n)`` bits for ``n`` terms) and add them in float64, exact in any order;
  - elementwise functions (``exp``, ``log``, ``log1p``, ``expm1``, ``sigmoid``, ``logsigmoid``,
    ``tanh``, ``erf``, ``sin``, ``cos``, ``gelu``, ``silu``, non-integer powers) run in
    :func:`ardm._core.portable_math`, float64 from IEEE basic operations only.

The grids are made in one pass by :func:`ardm._core.portable_grid`; a product's scaling back,
softmax and the normalization of layer and group norms run fused in Rust
(:func:`ardm._core.portable_rescale`, ``portable_softmax``, ``portable_normalize``), the same
operations element for element as the torch sequences they stand for, so the same bits.
Everything replaced computes in float64 and returns the input's dtype, so a float32 net stays a
float32 net up to its roundings: on the shipped models the coding log-probabilities move by at
most about 1e-3 and a call's exact bits by less than 0.01 (``benchmarks/bench_portable.py``).
Any other function is an error: a net that calls something without an exact form cannot make
portable blobs, and must say so rather than make blobs that decode only on its own machine.

Example:
    >>> import torch
    >>> x, w = torch.randn(4, 64), torch.randn(32, 64)
    >>> with portable_evaluation():
    ...     y = torch.nn.functional.linear(x, w).softmax(-1)
    >>> y.dtype, bool(torch.allclose(y, (x @ w.T).softmax(-1), atol=1e-5))
    (torch.float32, True)
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode, resolve_name

from ardm import _core

__all__ = ["portable_evaluation", "PortabilityError"]

PRODUCT_BITS = 52  # integers whose every partial sum stays below 2^52: exact in float64
# Grids of parameters kept between calls (least recently used first out); :func:`_weight_grid`.
MAX_CACHED_WEIGHTS = 256
_WEIGHTS: OrderedDict[tuple[int, int, tuple[int, ...], int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = OrderedDict()
_WEIGHTS_LOCK = threading.Lock()


class PortabilityError(ValueError):
    """A net called a torch function that has no portable (exact) form."""


# ---- integers under power-of-two scales ---------------------------------------------------------


def _float_numpy(x: torch.Tensor) -> Any:
    """``x`` as a C-contiguous numpy array of float32 or float64 for the Rust functions, which
    widen float32 exactly themselves (no float64 copy); other dtypes become float64."""
    x = x.detach()
    return (x if x.dtype in (torch.float32, torch.float64) else x.double()).contiguous().numpy()


def _float64_copy(x: torch.Tensor) -> torch.Tensor:
    """A new C-contiguous float64 tensor of ``x``'s values, for the Rust layers to write in place."""
    return x.detach().to(torch.float64, memory_format=torch.contiguous_format, copy=True)


def _to_grid(x: torch.Tensor, dims: Sequence[int], bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (as float64) as integers ``round(x * scale)`` with ``|.| <= 2^bits``, and ``scale``:
    one power of two per slice over ``dims`` (kept as size-1 dims), float64.

    The scale comes from the slice's largest magnitude m: ``2^(bits + 1022 - E)`` for m's
    biased exponent E (``m < 2^(E - 1022)``), kept within the normal numbers
    (``_core.portable_grid``, one pass in Rust). Multiplying and dividing by it is exact, so
    ``ints / scale`` is ``x`` rounded to the grid."""
    ndim = x.dim()
    reduced = sorted(d % ndim for d in dims) if ndim else []
    if not reduced:  # a scalar: its own slice
        ints, scale = _to_grid(x.reshape(1), [0], bits)
        return ints.reshape(()), scale.reshape(())
    first, last = reduced[0], reduced[-1]
    if reduced != list(range(first, last + 1)):  # not one block of axes: move them to the end
        moved = x.movedim(reduced, list(range(ndim - len(reduced), ndim)))
        ints, scale = _to_grid(moved, range(ndim - len(reduced), ndim), bits)
        back = list(range(ndim - len(reduced), ndim))
        return ints.movedim(back, reduced), scale.movedim(back, reduced)
    shape = x.shape
    outer, inner = math.prod(shape[:first]), math.prod(shape[last + 1:])
    ints, scale = _core.portable_grid(_float_numpy(x).reshape(outer, -1, inner), bits)
    kept = [1 if first <= d <= last else n for d, n in enumerate(shape)]
    return torch.from_numpy(ints).view(shape), torch.from_numpy(scale).view(kept)


def _bits_for(terms: int, total: int) -> int:
    return total - max(0, math.ceil(math.log2(max(terms, 1))))


def _weight_grid(weight: torch.Tensor, dims: Sequence[int], bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_to_grid` of a parameter, kept while the parameter is unchanged: every network
    call of a compress uses the same weights, and their grid costs as much as an activation's."""
    if not isinstance(weight, torch.nn.Parameter):
        return _to_grid(weight, dims, bits)
    key = (id(weight), weight._version, tuple(dims), bits)
    with _WEIGHTS_LOCK:
        hit = _WEIGHTS.get(key)
        if hit is not None:
            _WEIGHTS.move_to_end(key)
            return hit[1], hit[2]
    ints, scale = _to_grid(weight, dims, bits)
    with _WEIGHTS_LOCK:  # the entry holds the weight, so its id is not reused while cached
        _WEIGHTS[key] = (weight, ints, scale)
        while len(_WEIGHTS) > MAX_CACHED_WEIGHTS:
            _WEIGHTS.popitem(last=False)
    return ints, scale


def _scaled_product(ai: torch.Tensor, sa: torch.Tensor, bi: torch.Tensor, sb: torch.Tensor,
                    multiplier: float | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``((ai @ bi) / sa) / sb``, then ``* multiplier`` and ``+ bias`` where given (float64):
    the product of integers is exact, the rest one pass in Rust (the same operations as torch's
    ``y.div_(sa).div_(sb) * multiplier + bias``)."""
    y = torch.matmul(ai, bi)  # integers below 2^52: exact
    cols = y.shape[-1]
    if y.dim() < 2 or cols == 0 or not y.is_contiguous():
        y = y.div_(sa).div_(sb)
        y = y if multiplier is None else y * multiplier
        return y if bias is None else y + bias.double()
    batch = y.shape[:-2]
    rows = sa.expand(*y.shape[:-1], 1).reshape(-1)
    shared = math.prod(sb.shape[:-2]) == 1
    col_scales = sb.reshape(-1) if shared else sb.expand(*batch, 1, cols).reshape(-1)
    _core.portable_rescale(y.view(-1, y.shape[-2], cols).numpy(), rows.numpy(), col_scales.numpy(),
                           multiplier, None if bias is None else bias.detach().double().numpy())
    return y


def exact_matmul(a: torch.Tensor, b: torch.Tensor, multiplier: float | None = None) -> torch.Tensor:
    """``a @ b`` (float64; times ``multiplier`` where given) from operands rounded to integer
    grids, exact in any order."""
    bits = _bits_for(a.shape[-1], PRODUCT_BITS)
    ai, sa = _to_grid(a, [-1], bits // 2)
    bi, sb = _to_grid(b, [-2], bits - bits // 2)
    return _scaled_product(ai, sa, bi, sb, multiplier)


def exact_sum(x: torch.Tensor, dims: Sequence[int], keepdim: bool = False) -> torch.Tensor:
    """The sum of ``x`` (float64) over ``dims``, its terms rounded to an integer grid on which
    every partial sum is exact (below 2^52)."""
    dims = [d % x.dim() for d in dims] if x.dim() else []
    terms = math.prod(x.shape[d] for d in dims)
    xi, scale = _to_grid(x, dims, _bits_for(terms, PRODUCT_BITS))
    total = xi.sum(dim=dims, keepdim=True).div_(scale)
    return total if keepdim or not dims else total.squeeze(dims)


def _math(name: str, x: torch.Tensor) -> torch.Tensor:
    """``_core.portable_math`` on a tensor: computed in float64; float32 in gives float32 out
    (rounded once, as converting the float64 result would), anything else float64."""
    return torch.from_numpy(_core.portable_math(name, _float_numpy(x)))


# ---- the replaced functions ---------------------------------------------------------------------


def _float_result(like: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y.to(like.dtype) if like.is_floating_point() else y.float()


def _elementwise(name: str) -> Callable[..., torch.Tensor]:
    def apply(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or any(k not in ("inplace", "out") or v not in (False, None) for k, v in kwargs.items()):
            raise PortabilityError(f"{name} with options {args} {kwargs} has no portable form")
        return _float_result(x, _math(name, x))
    return apply


def _gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    return _float_result(x, _math("gelu" if approximate == "none" else "gelu_tanh", x))


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    bits = _bits_for(x.shape[-1], PRODUCT_BITS)
    xi, sx = _to_grid(x, [-1], bits // 2)
    wi, sw = _weight_grid(weight, [-1], bits - bits // 2)
    return _scaled_product(xi, sx, wi.t(), sw.t(), bias=bias).to(x.dtype)


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if not (a.is_floating_point() or b.is_floating_point()):
        return torch.matmul(a, b)
    vector_a, vector_b = a.dim() == 1, b.dim() == 1
    y = exact_matmul(a.unsqueeze(0) if vector_a else a, b.unsqueeze(-1) if vector_b else b)
    y = y.squeeze(-1) if vector_b else y
    return (y.squeeze(-2) if vector_a else y).to(torch.promote_types(a.dtype, b.dtype))


def _conv(conv: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def apply(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
              *args: Any, **kwargs: Any) -> torch.Tensor:
        # One scale per item (its whole input: every output sums over a window of it) and one
        # per output channel; float64 convolutions run direct or as im2col products, exact for
        # integers below 2^52 whatever the order.
        batched = x.dim() == weight.dim()
        xb = x if batched else x.unsqueeze(0)
        bits = _bits_for(weight.numel() // weight.shape[0], PRODUCT_BITS)
        xi, sx = _to_grid(xb, range(1, xb.dim()), bits // 2)
        wi, sw = _weight_grid(weight, range(1, weight.dim()), bits - bits // 2)
        y = conv(xi, wi, None, *args, **kwargs).div_(sx)
        channel_shape = (1, -1) + (1,) * (y.dim() - 2)
        y = y.div_(sw.view(channel_shape))
        if bias is not None:
            y = y + bias.double().view(channel_shape)
        return (y if batched else y.squeeze(0)).to(x.dtype)
    return apply


def _normalized(x: torch.Tensor, cols: int, eps: float, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over rows of the last ``cols`` values of
    ``x`` (a new float64 tensor, ``x``'s shape), mean and variance summed exactly on grids, in
    one Rust pass per row (:func:`ardm._core.portable_normalize`)."""
    y = _float64_copy(x)
    params = [None if p is None else p.detach().double().reshape(-1).numpy() for p in (weight, bias)]
    _core.portable_normalize(y.view(-1, cols).numpy(), eps, _bits_for(cols, PRODUCT_BITS), *params)
    return y


def _layer_norm(x: torch.Tensor, shape: Sequence[int], weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    cols = math.prod(shape)
    if x.numel() == 0 or cols == 0:
        return F.layer_norm(x, shape, weight, bias, eps)  # nothing to compute
    return _normalized(x, cols, eps, weight, bias).to(x.dtype)


def _group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    if x.numel() == 0:
        return F.group_norm(x, num_groups, weight, bias, eps)  # nothing to compute
    y = _normalized(x, x.numel() // x.shape[0] // num_groups, eps)
    channel_shape = (1, -1) + (1,) * (x.dim() - 2)
    y = y if weight is None else y * weight.double().view(channel_shape)
    return (y if bias is None else y + bias.double().view(channel_shape)).to(x.dtype)


def _log_sum_exp_parts(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(max, exp(x - max), sum of those) along ``dim``, float64, dims kept."""
    x = x.double()
    top = x.amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weights = _math("exp", x - top)
    return top, weights, exact_sum(weights, [dim], keepdim=True)


def _softmax_rows(x: torch.Tensor, grid_bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax over the last dim of ``x`` as a new float64 tensor, in one Rust pass per row
    (:func:`ardm._core.portable_softmax`; the same bits as :func:`_log_sum_exp_parts` and
    ``weights / total``). With ``grid_bits``: the probabilities' integers on grids of that many
    bits and their scales (dims kept), the left operand of an exact product."""
    p = _float64_copy(x)
    cols = p.shape[-1]
    scales = _core.portable_softmax(p.view(-1, cols).numpy(), _bits_for(cols, PRODUCT_BITS), grid_bits)
    return p, None if scales is None else torch.from_numpy(scales).view(*p.shape[:-1], 1)


def _softmax(x: torch.Tensor, dim: int, *_: Any, dtype: torch.dtype | None = None, **__: Any) -> torch.Tensor:
    if x.dim() == 0 or x.numel() == 0:
        _, weights, total = _log_sum_exp_parts(x, dim)
        return (weights / total).to(dtype or x.dtype)
    p, _ = _softmax_rows(x.movedim(dim, -1))
    return p.movedim(-1, dim).contiguous().to(dtype or x.dtype)


def _log_softmax(x: torch.Tensor, dim: int, *_: Any, dtype: torch.dtype | None = None, **__: Any) -> torch.Tensor:
    top, _, total = _log_sum_exp_parts(x, dim)
    return (x.double() - top - _math("log", total)).to(dtype or x.dtype)


def _logsumexp(x: torch.Tensor, dim: int | Sequence[int], keepdim: bool = False) -> torch.Tensor:
    if not isinstance(dim, int):
        if len(dim) != 1:
            raise PortabilityError("logsumexp over several dims has no portable form here")
        dim = dim[0]
    top, _, total = _log_sum_exp_parts(x, dim)
    y = top + _math("log", total)
    return (y if keepdim else y.squeeze(dim)).to(x.dtype)


def _sum(x: torch.Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False,
         *, dtype: torch.dtype | None = None) -> torch.Tensor:
    if not x.is_floating_point():
        return torch.sum(x, dim=dim, keepdim=keepdim, dtype=dtype) if dim is not None else x.sum(dtype=dtype)
    dims = list(range(x.dim())) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    return exact_sum(x, dims, keepdim).to(dtype or x.dtype)


def _mean(x: torch.Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False,
          *, dtype: torch.dtype | None = None) -> torch.Tensor:
    dims = list(range(x.dim())) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    count = math.prod(x.shape[d] for d in dims)
    return (exact_sum(x, dims, keepdim) / count).to(dtype or x.dtype)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
               enable_gqa: bool = False) -> torch.Tensor:
    if dropout_p or enable_gqa:
        raise PortabilityError("attention with dropout or grouped queries has no portable form")
    multiplier = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = exact_matmul(q, k.transpose(-2, -1), multiplier)
    if is_causal:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, -math.inf)
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool
                  else scores + attn_mask.double())
    if scores.numel() == 0:
        return exact_matmul(_softmax(scores, -1), v).to(q.dtype)
    # The softmax and the grid of the probabilities for their product with v, in one pass.
    bits = _bits_for(scores.shape[-1], PRODUCT_BITS)
    p_ints, p_scales = _softmax_rows(scores, bits // 2)
    v_ints, v_scales = _to_grid(v, [-2], bits - bits // 2)
    return _scaled_product(p_ints, p_scales, v_ints, v_scales).to(q.dtype)


def _pow(base: Any, exponent: Any) -> torch.Tensor:
    """``base ** exponent`` for tensors and numbers: integer powers exact where both are
    integers, else ``exp(exponent * log(base))`` (positive bases; 2 and 0.5 as products)."""
    b, e = torch.as_tensor(base), torch.as_tensor(exponent)
    if not (b.is_floating_point() or e.is_floating_point()):
        return torch.pow(base, exponent)
    if not isinstance(exponent, torch.Tensor) and exponent in (1, 2, 0.5):
        like = b if isinstance(base, torch.Tensor) else e
        value = {1: b, 2: b * b, 0.5: torch.sqrt(b)}[exponent]
        return value.to(torch.promote_types(like.dtype, torch.float32))
    dtype = torch.result_type(base, exponent) if isinstance(base, torch.Tensor) else e.dtype
    if bool((b <= 0).any()):
        raise PortabilityError("a power of a non-positive base has no portable form here")
    return _math("exp", e.double() * _math("log", b.double())).to(dtype)


def _rpow(x: torch.Tensor, base: Any) -> torch.Tensor:
    return _pow(base, x)


def _rsqrt(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / torch.sqrt(x)


def _dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    if training and p > 0:
        raise PortabilityError("dropout in training mode is random: coding needs net.eval()")
    return x


def _interpolate(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    mode = kwargs.get("mode", args[2] if len(args) > 2 else "nearest")
    if mode != "nearest":
        raise PortabilityError(f"interpolate mode {mode!r} has no portable form (use 'nearest')")
    return F.interpolate(x, *args, **kwargs)


REPLACED: dict[str, Callable[..., Any]] = {
    **{name: _elementwise(name) for name in
       ("exp", "log", "log1p", "expm1", "sigmoid", "tanh", "erf", "sin", "cos", "silu")},
    "logsigmoid": _elementwise("log_sigmoid"),
    "gelu": _gelu,
    "linear": _linear, "matmul": _matmul, "mm": _matmul, "bmm": _matmul,
    "conv1d": _conv(F.conv1d), "conv2d": _conv(F.conv2d),
    "layer_norm": _layer_norm, "group_norm": _group_norm,
    "softmax": _softmax, "log_softmax": _log_softmax, "logsumexp": _logsumexp,
    "sum": _sum, "mean": _mean,
    "scaled_dot_product_attention": _attention,
    "pow": _pow, "rpow": _rpow, "rsqrt": _rsqrt,
    "dropout": _dropout, "interpolate": _interpolate,
}

# One correctly rounded result per element, or no arithmetic at all: the same on every CPU.
EXACT = frozenset("""
    add sub mul div true_divide floor_divide neg abs sign sqrt reciprocal clamp clamp_min clamp_max
    clip minimum maximum where masked_fill eq ne lt le gt ge logical_and logical_or logical_not
    and or xor invert floor ceil round trunc remainder fmod isfinite isnan isinf relu pad
    max min amax amin argmax argmin all any gather scatter index_select take embedding one_hot
    cat stack split chunk unbind view view_as reshape permute transpose t flatten unflatten
    unsqueeze squeeze expand expand_as repeat repeat_interleave tile flip roll narrow select
    contiguous clone detach to float double long int bool half type_as type new_zeros new_ones
    new_full new_empty new_tensor zeros ones full empty zeros_like ones_like full_like empty_like
    arange tensor as_tensor from_numpy numpy getitem setitem len int bool float index
    dim size numel item tolist shape dtype device is_floating_point is_contiguous stride
    pixel_shuffle pixel_unshuffle broadcast_to sort topk nonzero masked_select cpu
    element_size data_ptr requires_grad is_leaf grad_fn data ndim T mT layout names format repr
""".split())

_DUNDER = {"radd": "add", "rsub": "sub", "rmul": "mul", "truediv": "div", "rtruediv": "div",
           "floordiv": "floor_divide", "rfloordiv": "floor_divide", "mod": "remainder",
           "rmod": "remainder", "iadd": "add", "isub": "sub", "imul": "mul", "itruediv": "div",
           "rmatmul": "rmatmul", "rand": "and", "ror": "or", "rxor": "xor", "iand": "and",
           "ior": "or", "ixor": "xor"}


def _op_name(func: Callable[..., Any]) -> str:
    """The base name of a torch function: ``torch.Tensor.__radd__`` -> ``add``, ``exp_`` ->
    ``exp``, ``torch.Tensor.shape.__get__`` -> ``shape``."""
    parts = (resolve_name(func) or getattr(func, "__name__", repr(func))).split(".")
    name = parts[-2] if parts[-1] in ("__get__", "__set__") else parts[-1]
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        name = _DUNDER.get(name, name)
    return name.rstrip("_") or name


# func -> its replacement, or None where the function itself is exact (filled as funcs are met).
_KNOWN: dict[Callable[..., Any], Callable[..., Any] | None] = {}


class _Portable(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        impl = _KNOWN.get(func, _KNOWN)
        if impl is _KNOWN:
            impl = _KNOWN[func] = _replacement(func)
        return func(*args, **(kwargs or {})) if impl is None else impl(*args, **(kwargs or {}))


def _replacement(func: Callable[..., Any]) -> Callable[..., Any] | None:
    """What :class:`_Portable` runs for ``func``: None to run it as it is."""
    full_name = resolve_name(func) or repr(func)
    name = _op_name(func)
    if name in EXACT:
        return None
    if name in REPLACED and not (full_name.endswith("_") and not full_name.endswith("__")):
        return REPLACED[name]
    raise PortabilityError(
        f"{full_name} has no portable form, so a network that calls it cannot code blobs that "
        f"decode on every machine (ardm.coding.portable lists the functions a net may use)"
    )


@contextlib.contextmanager
def portable_evaluation() -> Iterator[None]:
    """Within it (on this thread), torch functions evaluate as described in the module docs:
    the same bits on every machine, or a :class:`PortabilityError`."""
    with _Portable():
        yield
