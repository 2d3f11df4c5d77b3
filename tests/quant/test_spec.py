"""QuantSpec: integer ranges, validation, power-of-two detection, replace, fixed_point, equality."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from qa_lirpa.quant import QuantSpec

BITS = list(range(2, 17))


@pytest.mark.parametrize("bits", BITS)
def test_unsigned_range(bits):
    spec = QuantSpec(bits, signed=False)
    assert spec.qmin == 0
    assert spec.qmax == 2 ** bits - 1
    # narrow only affects signed formats
    narrow = QuantSpec(bits, signed=False, narrow=True)
    assert (narrow.qmin, narrow.qmax) == (0, 2 ** bits - 1)


@pytest.mark.parametrize("bits", BITS)
def test_signed_range(bits):
    spec = QuantSpec(bits, signed=True)
    assert spec.qmin == -(2 ** (bits - 1))
    assert spec.qmax == 2 ** (bits - 1) - 1
    # number of codes is 2^bits
    assert spec.qmax - spec.qmin + 1 == 2 ** bits


@pytest.mark.parametrize("bits", BITS)
def test_signed_narrow_range(bits):
    spec = QuantSpec(bits, signed=True, narrow=True)
    assert spec.qmin == -(2 ** (bits - 1)) + 1
    assert spec.qmax == 2 ** (bits - 1) - 1
    assert spec.qmin == -spec.qmax


def test_bits_32_is_allowed():
    spec = QuantSpec(32, signed=True)
    assert (spec.qmin, spec.qmax) == (-(2 ** 31), 2 ** 31 - 1)


@pytest.mark.parametrize("bits", [1, 33, 0, -4])
def test_invalid_bits(bits):
    with pytest.raises(ValueError):
        QuantSpec(bits)


@pytest.mark.parametrize("scale", [0.0, -1.0, -0.5, float("inf"), float("nan"), -float("inf")])
def test_invalid_scale(scale):
    with pytest.raises(ValueError):
        QuantSpec(8, scale=scale)


def test_invalid_scale_in_per_channel_list():
    with pytest.raises(ValueError):
        QuantSpec(8, scale=[0.5, 0.0, 0.25], axis=0)
    with pytest.raises(ValueError):
        QuantSpec(8, scale=[0.5, -0.25], axis=0)


@pytest.mark.parametrize("bits,signed,narrow,bad_zp", [
    (8, False, False, -1),
    (8, False, False, 256),
    (4, False, False, 16),
    (8, True, False, 128),
    (8, True, False, -129),
    (8, True, True, -128),     # outside the narrow range [-127, 127]
    (2, True, False, 2),
    (2, True, False, -3),
])
def test_zero_point_outside_range(bits, signed, narrow, bad_zp):
    with pytest.raises(ValueError):
        QuantSpec(bits, signed=signed, narrow=narrow, zero_point=bad_zp)


@pytest.mark.parametrize("bits,signed,narrow", [(8, False, False), (8, True, False), (8, True, True),
                                                (2, True, False), (3, False, False)])
def test_zero_point_at_range_ends_is_valid(bits, signed, narrow):
    probe = QuantSpec(bits, signed=signed, narrow=narrow)
    for z in (probe.qmin, probe.qmax):
        assert QuantSpec(bits, signed=signed, narrow=narrow, zero_point=z).zero_point == (z,)


def test_zero_point_outside_range_per_channel():
    with pytest.raises(ValueError):
        QuantSpec(8, signed=False, scale=[0.5, 0.25], zero_point=[3, 300], axis=0)


def test_per_channel_needs_axis():
    with pytest.raises(ValueError):
        QuantSpec(8, scale=[0.5, 0.25])
    with pytest.raises(ValueError):
        QuantSpec(8, scale=(0.5, 0.25, 0.125), axis=None)
    ok = QuantSpec(8, scale=[0.5, 0.25], axis=0)
    assert ok.per_channel and ok.channels == 2


def test_zero_point_count_must_match_scales():
    with pytest.raises(ValueError):
        QuantSpec(8, scale=[0.5, 0.25, 0.125], zero_point=[1, 2], axis=0)


def test_invalid_rounding():
    with pytest.raises(ValueError):
        QuantSpec(8, rounding="floor")
    with pytest.raises(ValueError):
        QuantSpec(8, rounding="nearest")


def test_single_element_list_is_per_tensor():
    a = QuantSpec(8, scale=[0.25])
    assert not a.per_channel
    assert a == QuantSpec(8, scale=0.25)


@pytest.mark.parametrize("e", range(-30, 31, 3))
def test_is_power_of_two_true(e):
    assert QuantSpec(8, scale=2.0 ** e).is_power_of_two
    assert QuantSpec(8, scale=[2.0 ** e, 2.0 ** (e - 1), 1.0], axis=0).is_power_of_two


@pytest.mark.parametrize("s", [0.1, 0.3, 0.75, 3.0, 0.0123, 1.5, 2.0 ** -7 * 3, 1.0 + 2 ** -52,
                               math.nextafter(0.5, 1.0), math.nextafter(0.5, 0.0)])
def test_is_power_of_two_false(s):
    assert not QuantSpec(8, scale=s).is_power_of_two
    # one non-power-of-two channel is enough
    assert not QuantSpec(8, scale=[0.5, s], axis=0).is_power_of_two


def test_is_power_of_two_subnormal_and_tiny():
    assert QuantSpec(8, scale=2.0 ** -1074).is_power_of_two
    assert QuantSpec(8, scale=2.0 ** -1030).is_power_of_two
    assert not QuantSpec(8, scale=3 * 2.0 ** -1074).is_power_of_two


def test_replace_changes_fields_and_keeps_others():
    base = QuantSpec(8, signed=True, scale=0.25, zero_point=-3, rounding="half_up", narrow=True)
    new = base.replace(bits=6)
    assert new.bits == 6
    assert (new.signed, new.scale, new.zero_point, new.rounding, new.narrow) == \
        (True, (0.25,), (-3,), "half_up", True)
    # the original is untouched
    assert base.bits == 8
    assert base.replace() == base
    r = base.replace(rounding="half_even", scale=0.5)
    assert r.rounding == "half_even" and r.scale == (0.5,) and r.bits == 8


def test_replace_to_per_channel_and_validation():
    base = QuantSpec(8, signed=True, scale=0.25)
    pc = base.replace(scale=[0.5, 0.25, 0.125], axis=0)
    assert pc.per_channel and pc.axis == 0 and pc.scale == (0.5, 0.25, 0.125)
    with pytest.raises(ValueError):
        base.replace(scale=[0.5, 0.25])          # per-channel without axis
    with pytest.raises(ValueError):
        base.replace(bits=1)
    with pytest.raises(ValueError):
        base.replace(zero_point=200)
    with pytest.raises(ValueError):
        base.replace(scale=-1.0)
    # narrowing the bit width can push a valid zero point out of range
    with pytest.raises(ValueError):
        QuantSpec(8, signed=False, zero_point=100).replace(bits=4)


@pytest.mark.parametrize("bits,frac,signed", [(8, 8, False), (8, 7, True), (6, 5, True), (6, 4, False),
                                              (16, 0, True), (4, -2, False)])
def test_fixed_point(bits, frac, signed):
    spec = QuantSpec.fixed_point(bits, frac, signed)
    assert spec.bits == bits and spec.signed == signed
    assert spec.scale == (2.0 ** -frac,)
    assert spec.zero_point == (0,)
    assert spec.rounding == "half_up"
    assert spec.is_power_of_two
    assert not spec.per_channel
    assert QuantSpec.fixed_point(bits, frac, signed, rounding="half_even").rounding == "half_even"
    # representable real range
    lo, hi = spec.dequant_range(torch.zeros(1, dtype=torch.float64))
    assert float(lo) == spec.qmin * 2.0 ** -frac
    assert float(hi) == spec.qmax * 2.0 ** -frac


def test_fixed_point_aaai21_formats():
    # weights 6-bit signed f=5: [-1, 31/32]; activations 6-bit unsigned f=4: [0, 63/16]
    w = QuantSpec.fixed_point(6, 5, True)
    lo, hi = w.dequant_range(torch.zeros((), dtype=torch.float64))
    assert (float(lo), float(hi)) == (-1.0, 31 / 32)
    a = QuantSpec.fixed_point(6, 4, False)
    lo, hi = a.dequant_range(torch.zeros((), dtype=torch.float64))
    assert (float(lo), float(hi)) == (0.0, 63 / 16)


def test_frozen():
    spec = QuantSpec(8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.bits = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.scale = (0.5,)  # type: ignore[misc]


def test_equality_and_hash():
    a = QuantSpec(8, signed=True, scale=[0.5, 0.25], zero_point=[1, -1], axis=0, rounding="half_up")
    b = QuantSpec(8, signed=True, scale=(0.5, 0.25), zero_point=(1, -1), axis=0, rounding="half_up")
    c = QuantSpec(8, signed=True, scale=torch.tensor([0.5, 0.25]), zero_point=[1, -1], axis=0,
                  rounding="half_up")
    assert a == b == c
    assert hash(a) == hash(b) == hash(c)
    assert len({a, b, c}) == 1
    variants = [
        a.replace(bits=7),
        a.replace(signed=False, zero_point=[1, 2]),
        a.replace(scale=[0.5, 0.125]),
        a.replace(zero_point=[1, 0]),
        a.replace(axis=1),
        a.replace(rounding="half_even"),
        a.replace(narrow=True),
    ]
    for v in variants:
        assert v != a
    assert len({a, *variants}) == len(variants) + 1
    d = {a: "x"}
    assert d[b] == "x"


def test_int_and_float_coercion():
    spec = QuantSpec(8.0, scale=1, zero_point=3.0)  # type: ignore[arg-type]
    assert spec.bits == 8 and isinstance(spec.bits, int)
    assert spec.scale == (1.0,) and isinstance(spec.scale[0], float)
    assert spec.zero_point == (3,) and isinstance(spec.zero_point[0], int)


def test_scale_and_zero_point_tensors_broadcast():
    spec = QuantSpec(8, scale=[0.5, 0.25, 0.125], zero_point=[1, 2, 3], axis=1)
    like = torch.zeros(2, 3, 4, dtype=torch.float64)
    s = spec.scale_tensor(like)
    z = spec.zero_point_tensor(like)
    assert s.shape == (1, 3, 1) and z.shape == (1, 3, 1)
    assert s.reshape(-1).tolist() == [0.5, 0.25, 0.125]
    assert z.reshape(-1).tolist() == [1.0, 2.0, 3.0]
    neg = spec.replace(axis=-2)
    assert neg.scale_tensor(like).shape == (1, 3, 1)
    with pytest.raises(ValueError):
        spec.replace(axis=5).scale_tensor(like)
