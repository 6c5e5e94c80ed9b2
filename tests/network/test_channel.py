import numpy as np
import pytest

from hffm_opt.network import channel


def test_dbm_conversions_by_hand():
    assert channel.dbm_to_w(30.0) == pytest.approx(1.0)
    assert channel.dbm_to_w(0.0) == pytest.approx(1e-3)
    assert channel.w_to_dbm(0.2) == pytest.approx(10 * np.log10(200.0))
    # -204 dBm/Hz = 10^(-23.4) W/Hz
    assert channel.noise_psd_w_per_hz(-204.0) == pytest.approx(10 ** -23.4, rel=1e-12)
    assert channel.linear_to_db(channel.db_to_linear(-30.0)) == pytest.approx(-30.0)


def test_path_loss_by_hand():
    # -30 dB at 1 m, exponent 3: 1e-3 * 100^-3 at 100 m
    assert channel.path_loss(100.0) == pytest.approx(1e-9)
    assert channel.path_loss([1.0, 10.0]) == pytest.approx([1e-3, 1e-6])
    assert channel.path_loss(0.1) == pytest.approx(1e-3)  # held at d0


def test_shannon_rate_and_transmit_by_hand():
    # g p / (N0 b) = 1e-9 * 1 / (1e-18 * 1e6) = 1000 -> rate = 1e6 * log2(1001)
    r = channel.shannon_rate(1e6, 1.0, 1e-9, 1e-18)
    assert r == pytest.approx(1e6 * np.log2(1001.0))
    t, e = channel.transmit(8e6, 1e6, 0.5, 1e-9, 1e-18)
    rate = 1e6 * np.log2(1 + 500.0)
    assert t == pytest.approx(8e6 / rate)
    assert e == pytest.approx(0.5 * 8e6 / rate)
    assert channel.shannon_rate(0.0, 1.0, 1e-9, 1e-15) == 0.0
    t0, e0 = channel.transmit(0.0, 0.0, 0.0, 1e-9, 1e-15)
    assert t0 == 0.0 and e0 == 0.0


def test_rayleigh_mean_and_seed():
    a = channel.rayleigh_power(np.random.default_rng(1), 200_000)
    b = channel.rayleigh_power(np.random.default_rng(1), 200_000)
    assert np.array_equal(a, b)
    assert a.mean() == pytest.approx(2.0, rel=0.02)  # unit-variance components: E|h|^2 = 2


def test_pairwise_distance():
    d = channel.pairwise_distance([[0, 0], [3, 4]], [[0, 0]])
    assert d.ravel() == pytest.approx([0.0, 5.0])


def test_load_price_is_accurate_where_the_closed_form_cancels():
    """(x - 1) e^x + 1 is x^2/2 + x^3/3 + ... for small x: the closed form rounds to 0 below x ~ 1e-8 (a long time
    budget); load_price keeps the series' value there, and agrees with the closed form where that is exact."""
    for x in (1e-30, 1e-12, 1e-8, 1e-4):
        assert channel.load_price(x) == pytest.approx(x * x / 2 + x ** 3 / 3 + x ** 4 / 8 + x ** 5 / 30, rel=1e-15,
                                                      abs=0)
    big = np.array([0.5, 0.75, 1.0, 3.0, 20.0, 300.0])
    assert channel.load_price(big) == pytest.approx((big - 1.0) * np.exp(big) + 1.0, rel=1e-14, abs=0)
    below, above = np.nextafter(0.5, 0.0), 0.5  # the series and the closed form meet at the switch
    assert channel.load_price(below) == pytest.approx(float(channel.load_price(above)), rel=1e-14, abs=0)
    assert np.all(np.diff(channel.load_price(np.logspace(-12, 2, 2000))) > 0)  # increasing, as the price must be
