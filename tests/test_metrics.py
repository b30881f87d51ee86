"""Metrics: hand-computed PSNR, the benchmark's uint8 rounding, SSIM against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rifelab.measure.metrics import error_stats, interpolation_error, mean_ci95, psnr, ssim, ssim_skimage


def test_psnr_by_hand(carphone):
    gt = carphone[0]
    pred = np.clip(gt.astype(int) + 4, 0, 255).astype(np.uint8)
    mse = ((pred.astype(float) - gt) / 255) ** 2
    assert psnr(pred, gt)[0] == pytest.approx(-10 * np.log10(mse.mean()), rel=1e-12)
    assert np.isinf(psnr(gt, gt)[0])


def test_prediction_is_rounded_to_uint8_first(carphone):
    gt = torch.from_numpy(carphone[:1]).permute(0, 3, 1, 2).float() / 255
    nudged = gt + 0.4 / 255  # rounds back to the same uint8 values
    assert np.isinf(psnr(nudged, carphone[0])[0])
    assert psnr(gt + 0.6 / 255, carphone[0])[0] < 60


def test_ssim_matches_scikit_image(carphone):
    a, b = carphone[:3], carphone[1:4]
    assert np.allclose(ssim(a, b), ssim_skimage(a, b), atol=1e-9)
    assert ssim(a[0], a[0])[0] == pytest.approx(1.0)
    assert ssim(a[0], b[0])[0] < 0.99


def test_batch_torch_and_numpy_agree(carphone):
    t = torch.from_numpy(carphone[:4]).permute(0, 3, 1, 2).float() / 255
    assert np.allclose(psnr(t[:2], t[2:]), psnr(carphone[:2], carphone[2:4]))
    assert psnr(t[:2], t[2:]).shape == (2,)


def test_error_stats_and_ie():
    a = np.zeros((1, 4, 5, 3), np.float64)
    b = a.copy()
    b[0, 0, 0, 0] = 1.0
    b[0, 1, :, :] = 0.1
    s = error_stats(a, b)
    n = a.size
    assert s["max_abs"][0] == 1.0
    assert s["mae"][0] == pytest.approx((1.0 + 0.1 * 15) / n)
    assert s["rmse"][0] == pytest.approx(np.sqrt((1.0 + 0.01 * 15) / n))
    assert interpolation_error(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 3, np.uint8))[0] == 3.0


def test_shape_mismatch_and_ci(carphone, bikes):
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(carphone[0], bikes[0])
    m, lo, hi = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and 1.0 <= lo < m < hi <= 4.0
