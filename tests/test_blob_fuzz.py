"""Corrupted blobs: every flipped bit, rewritten header fields and fuzzed bytes either decode to
exactly the original or raise ``ValueError``: never other data, another exception or a hang
(issue #12).

Every bit of small real blobs of every kind is flipped with tiny models (4x4 crops of the
bundled Fashion-MNIST images, 16 levels, and a small byte model over items of 16: any budget
a corrupted header can declare stays a few dozen calls). Header fields of blobs of the shipped
models are rewritten one at a time over their real data, and hypothesis mutates blobs of both
(bit flips, overwritten, inserted and deleted bytes, truncation, splices of two blobs),
decoding shipped-model mutants whose headers ask for a few network calls.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
from conftest import SequenceNet, perturbed_unet, real_text
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ardm
from ardm import _core
from ardm.coding import decoding_steps
from ardm.coding.container import (
    DTYPES,
    JOIN_CONCAT,
    LAYOUT_BATCH,
    LAYOUT_ONE,
    LAYOUT_SEQUENCE,
    StreamHeader,
    pack_streams,
    unpack_streams,
)
from ardm.coding.fields import FieldReader, FieldWriter
from ardm.coding.fingerprint import model_fingerprint
from ardm.coding.items import item_lengths
from ardm.models import OrderAgnosticARDM, UpscaleARDM
from ardm.nets import build_net
from ardm.pretrained import bundled_text

# ---- the blobs ----------------------------------------------------------------------------------


def _crops(n: int) -> torch.Tensor:
    """Real Fashion-MNIST test images (bundled), 4x4 crops at 16 levels."""
    images = ardm.bundled_images()
    return torch.stack([images[i % 10, :, 12 + i // 10 : 16 + i // 10, 12:16] >> 4 for i in range(n)])


def _text(n: int) -> torch.Tensor:
    return torch.frombuffer(bytearray(real_text(n)), dtype=torch.uint8)


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, ardm.models.ARDM]:
    torch.manual_seed(3)
    oa = OrderAgnosticARDM(perturbed_unet(16, (1, 4, 4)), 16, (1, 4, 4)).eval()
    up = UpscaleARDM(build_net("tiny", 16, (1, 4, 4)), 16, (1, 4, 4), branch_factor=4).eval()
    text = OrderAgnosticARDM(SequenceNet(16), 256, (16,)).eval()
    text.modality = "text"
    for model, data in ((oa, _crops(10)), (up, _crops(10)), (text, _text(128).view(8, 16))):
        model.estimate_step_losses(data)
    return {"oa": oa, "up": up, "text": text}


def _blob(x: torch.Tensor, model: ardm.models.ARDM, mode: str, budget: int) -> tuple:
    blob = ardm.compress(x, model, budget=budget, mode=mode)
    assert torch.equal(ardm.decompress(blob, model), x)
    return x, model, blob


@pytest.fixture(scope="module")
def tiny_blobs(tiny_models) -> dict[str, tuple]:
    """(data, model, blob) of every kind: one item, joint and independent batches, joint and
    independent sequences (the last item short); coded and raw items both occur."""
    oa, up, text = tiny_models["oa"], tiny_models["up"], tiny_models["text"]
    blobs = {
        "image one item": _blob(_crops(2)[1], oa, "joint", 3),
        "image one item, upscale": _blob(_crops(1)[0], up, "joint", 4),
        "image batch joint": _blob(_crops(2), oa, "joint", 2),
        "image batch independent": _blob(_crops(3)[1:], oa, "independent", 3),
        "text sequence joint": _blob(_text(21), text, "joint", 3),
        "text sequence independent": _blob(_text(37), text, "independent", 2),
    }
    # pieces of independent blobs alone (split): their header marked, their check 24 bits
    for kind, index in (("image", 0), ("text", -1)):
        x, model, blob = blobs[f"{kind} {'batch' if kind == 'image' else 'sequence'} independent"]
        item = x[index] if kind == "image" else x[32:]  # the text's last piece: 5 of 16 values
        piece = ardm.coding.split(blob)[index]
        assert torch.equal(ardm.decompress(piece, model), item)
        blobs[f"{kind} piece alone"] = (item, model, piece)
    return blobs


@pytest.fixture(scope="module")
def shipped_blobs() -> dict[str, tuple]:
    """Blobs of the shipped models at budgets of one or two calls."""
    image, kjv = ardm.load(), ardm.load("kjv")
    images, text = ardm.bundled_images(), bundled_text()
    return {
        "image one item": _blob(images[4], image, "joint", 2),
        "image batch joint": _blob(images[:2], image, "joint", 1),
        "image batch independent": _blob(images[2:4], image, "independent", 1),
        "text sequence joint": _blob(text[0, :40], kjv, "joint", 2),
        "text sequence independent": _blob(text[1, :200].repeat(2)[:300], kjv, "independent", 1),
    }


def _check(blob: bytes, model: ardm.models.ARDM, *originals: torch.Tensor) -> None:
    """``blob`` decodes to exactly one of ``originals`` (shape, dtype and values) or raises
    ValueError."""
    try:
        out = ardm.decompress(blob, model)
    except ValueError:
        return
    assert any(out.dtype == x.dtype and out.shape == x.shape and torch.equal(out, x)
               for x in originals), f"wrong data: {out.dtype} {tuple(out.shape)}"


# ---- every bit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [
    "image one item", "image one item, upscale", "image batch joint", "image batch independent",
    "text sequence joint", "text sequence independent", "image piece alone", "text piece alone",
])
def test_every_flipped_bit_is_an_error_or_changes_nothing(tiny_blobs, kind):
    x, model, blob = tiny_blobs[kind]
    for bit in range(8 * len(blob)):
        mutant = bytearray(blob)
        mutant[bit // 8] ^= 1 << (bit % 8)
        _check(bytes(mutant), model, x)


def _rewrite_header(stream: bytes, model: ardm.models.ARDM, change) -> bytes:
    """``stream`` with its header fields read, changed by ``change(header)`` and written back
    over the same data (the check, which starts the stream, is left as it was)."""
    coder = _core.AnsCoder.from_compact_bytes(stream)
    reader = FieldReader(coder)
    header = StreamHeader.read_prefix(reader)
    header.read_raw_flags(reader, len(item_lengths(header.layout, header.count, model.num_vars)))
    changed = copy.deepcopy(header)
    change(changed)
    assert changed != header
    writer = FieldWriter()
    changed.write(writer)
    writer.push_onto(coder)
    return coder.to_compact_bytes()


HEADER_CHANGES = {
    "dtype int8": lambda h: setattr(h, "dtype", "int8"),
    "dtype uint8 stored": lambda h: setattr(h, "dtype", "uint8"),
    "dtype int16": lambda h: setattr(h, "dtype", "int16"),
    "budget": lambda h: setattr(h, "budget", 1 if h.budget != 1 else 2),
    "order seed": lambda h: setattr(h, "order_seed", 1),
    "custom model": lambda h: setattr(h, "model", None),  # with the model's own 16 bits
    "raw flags": lambda h: setattr(h, "raw", [not r for r in h.raw]),
}


@pytest.mark.parametrize("change", sorted(HEADER_CHANGES))
@pytest.mark.parametrize("kind", ["image one item", "text sequence joint", "image batch independent"])
def test_a_rewritten_header_field_over_real_data_is_an_error(shipped_blobs, kind, change):
    """The issue's blob "whose header says int8 instead of uint8", and every other field: the
    check covers the header, so the data under another header never comes back."""
    x, model, blob = shipped_blobs[kind]

    def change_it(header: StreamHeader) -> None:
        HEADER_CHANGES[change](header)
        if header.model is None:
            header.fingerprint16 = model_fingerprint(model) & 0xFFFF

    joiner, streams = unpack_streams(blob)
    if joiner is None:
        mutant = _rewrite_header(blob, model, change_it)
    else:  # the frame's check made right for the data: the piece's own check must catch it
        mutant = pack_streams([_rewrite_header(streams[0], model, change_it), *streams[1:]], joiner,
                              [item.numpy() for item in x])
    with pytest.raises(ValueError):
        ardm.decompress(mutant, model)


def test_a_changed_count_over_real_data_is_an_error(shipped_blobs):
    x, model, blob = shipped_blobs["image batch joint"]
    for count in (1, 3, 4):
        mutant = _rewrite_header(blob, model, lambda h, n=count: (setattr(h, "count", n),
                                                                  setattr(h, "raw", [False] * n)))
        with pytest.raises(ValueError):
            ardm.decompress(mutant, model)


def test_a_frame_whose_joiner_is_flipped_is_an_error(tiny_blobs, shipped_blobs):
    """Stacked images read as one sequence, or a sequence with a short last item read as a
    stack, do not fit their streams (before the fix: other shapes, or a RuntimeError)."""
    for blobs, kind in ((tiny_blobs, "image batch independent"),
                        (tiny_blobs, "text sequence independent"),
                        (shipped_blobs, "image batch independent"),
                        (shipped_blobs, "text sequence independent")):
        _, model, blob = blobs[kind]
        mutant = bytearray(blob)
        mutant[1] ^= 1
        with pytest.raises(ValueError, match="frame"):
            ardm.decompress(bytes(mutant), model)


def test_the_joiner_of_full_sequence_items_is_covered(tiny_models):
    """A stack of full 1-D items and their concatenation differ in the joiner byte and in the
    last stream's (checked) layout: flipping the byte either way is an error."""
    model = tiny_models["text"]
    x = _text(32)
    for data in (x.view(2, 16), x):
        blob = bytearray(ardm.compress(data, model, budget=2, mode="independent"))
        pieces = [ardm.decompress(piece, model) for piece in ardm.coding.split(bytes(blob))]
        assert torch.equal(torch.stack(pieces).view(data.shape), data)  # each piece alone
        blob[1] ^= 1
        with pytest.raises(ValueError, match="frame"):
            ardm.decompress(bytes(blob), model)


# ---- hypothesis ---------------------------------------------------------------------------------


@st.composite
def mutations(draw: st.DrawFn, blob: bytes, other: bytes) -> bytes:
    """A corrupted copy of ``blob``: a few flipped bits, overwritten, inserted or deleted bytes,
    a truncation or extension, or a splice with ``other``."""
    kind = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate", "extend",
                                 "splice"]))
    data = bytearray(blob)
    position = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        for bit in draw(st.lists(st.integers(0, 8 * len(data) - 1), min_size=1, max_size=3)):
            data[bit // 8] ^= 1 << (bit % 8)
    elif kind == "overwrite":
        value = draw(st.binary(min_size=1, max_size=4))
        data[position : position + len(value)] = value
    elif kind == "insert":
        data[position:position] = draw(st.binary(min_size=1, max_size=4))
    elif kind == "delete":
        del data[position : position + draw(st.integers(1, 4))]
    elif kind == "truncate":
        del data[position:]
    elif kind == "extend":
        data += draw(st.binary(min_size=1, max_size=8))
    else:
        data = data[:position] + other[draw(st.integers(0, len(other))):]
    return bytes(data)


TINY_KINDS = ["image one item", "image one item, upscale", "image batch joint",
              "image batch independent", "text sequence joint", "text sequence independent",
              "image piece alone", "text piece alone"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(TINY_KINDS), partner=st.sampled_from(TINY_KINDS))
def test_fuzzed_tiny_blobs_decode_to_the_original_or_raise(tiny_blobs, data, kind, partner):
    x, model, blob = tiny_blobs[kind]
    y, _, other = tiny_blobs[partner]
    _check(data.draw(mutations(blob, other)), model, x, y)


SHIPPED_KINDS = ["image one item", "image batch joint", "image batch independent",
                 "text sequence joint", "text sequence independent"]
MAX_SHIPPED_CALLS = 4  # a mutant that asks for more is decoded by the tiny models' tests instead


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow,
                                                                HealthCheck.filter_too_much])
@given(data=st.data(), kind=st.sampled_from(SHIPPED_KINDS), partner=st.sampled_from(SHIPPED_KINDS))
def test_fuzzed_shipped_blobs_decode_to_the_original_or_raise(shipped_blobs, data, kind, partner):
    x, model, blob = shipped_blobs[kind]
    y, _, other = shipped_blobs[partner]
    mutant = data.draw(mutations(blob, other))
    try:
        calls = decoding_steps(mutant, model)
    except ValueError:
        calls = 0  # the header alone is refused: decompress must refuse it too, at once
    assume(calls <= MAX_SHIPPED_CALLS)
    _check(mutant, model, x, y)


def test_the_blob_names_its_shipped_model(shipped_blobs):
    """Without a model, a mutant that names the other shipped model is decoded by that one."""
    x, model, blob = shipped_blobs["text sequence joint"]
    mutant = _rewrite_header(blob, model, lambda h: setattr(h, "model", "fashion-mnist"))
    with pytest.raises(ValueError):
        ardm.decompress(mutant)
    assert torch.equal(ardm.decompress(blob), x)


def test_every_dtype_round_trips_and_a_swapped_dtype_is_an_error(tiny_models):
    model = tiny_models["oa"]
    x = _crops(1)[0]
    for dtype in DTYPES:
        typed = x.to(getattr(torch, dtype))
        blob = ardm.compress(typed, model, budget=2)
        out = ardm.decompress(blob, model)
        assert out.dtype == typed.dtype and torch.equal(out, typed)
        other = "int8" if dtype != "int8" else "uint8"
        with pytest.raises(ValueError):
            ardm.decompress(_rewrite_header(blob, model, lambda h, d=other: setattr(h, "dtype", d)),
                            model)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(layout=st.sampled_from([LAYOUT_ONE, LAYOUT_BATCH, LAYOUT_SEQUENCE]),
       count=st.one_of(st.integers(0, 40), st.integers(0, 2**61)),
       budget=st.one_of(st.none(), st.integers(0, 40), st.integers(0, 2**40)),
       order_seed=st.one_of(st.none(), st.integers(0, 2**61)),
       dtype=st.one_of(st.none(), st.sampled_from(DTYPES)),
       raw=st.sampled_from(["none", "all", "some"]),
       garbage=st.binary(max_size=48),
       streams=st.integers(0, 12))
def test_declared_sizes_fail_fast(tiny_models, layout, count, budget, order_seed, dtype, raw,
                                  garbage, streams):
    """Headers of every declared size over garbage data, alone or behind a frame of copies: a
    ValueError, in bounded time (counts up to 2^61 allocate nothing per item)."""
    model = tiny_models["text"]
    items = 1 if layout == LAYOUT_ONE else count if layout == LAYOUT_BATCH else -(-count // 16)
    header = StreamHeader(None, model_fingerprint(model) & 0xFFFF, layout, count, dtype, budget,
                          order_seed)
    # the summary (none, all) is written alone; "some" writes a flag per item
    header.raw = ([bool(i % 2) for i in range(items)] if raw == "some" and items <= 40
                  else [raw == "all"])
    coder = _core.AnsCoder()
    filler = FieldWriter()
    for byte in garbage:
        filler.bits(byte, 8)
    filler.push_onto(coder)
    writer = FieldWriter()
    header.write(writer)
    writer.push_onto(coder)
    stream = coder.to_compact_bytes()
    blob = stream if streams == 0 else pack_streams([stream] * streams, JOIN_CONCAT)
    start = time.perf_counter()
    with pytest.raises(ValueError):
        ardm.decompress(blob, model)
    assert time.perf_counter() - start < 5
