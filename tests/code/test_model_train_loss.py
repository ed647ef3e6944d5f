"""The matte network's loss terms and seeding a matte network from a mask detector (--init-from)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from clearmark.model.detector import IMAGENET_MEAN, IMAGENET_STD, DetectorConfig, build_network, load_detector_folder, save_detector
from clearmark.model.train import RECONSTRUCTION_MAX_ALPHA, _start_from_detector, loss_terms

SIDE = 32


def _blend_batch(*, has_matte: bool = True, has_clean: bool = True) -> dict[str, torch.Tensor]:
    """Two pairs blended exactly as J = alpha * W + (1 - alpha) * I, the mark semi-transparent."""
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand((2, 3, SIDE, SIDE), generator=generator)
    colour = torch.rand((2, 3, SIDE, SIDE), generator=generator)
    mask = torch.zeros((2, 1, SIDE, SIDE))
    mask[:, :, 8:24, 4:28] = 1
    alpha = mask * torch.linspace(0.2, 0.8, SIDE).view(1, 1, 1, SIDE)
    watermarked = alpha * colour + (1 - alpha) * clean
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return {
        "image": (watermarked - mean) / std, "mask": mask, "clean": clean, "alpha": alpha, "colour": colour,
        "has_matte": torch.tensor([has_matte] * 2), "has_clean": torch.tensor([has_clean] * 2),
    }  # fmt: skip


def _perfect_logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    footprint = (batch["mask"] * 2 - 1) * 30  # sigmoid saturates: BCE ~ 0, Dice ~ 0
    return torch.cat([footprint, torch.logit(batch["alpha"], eps=1e-7), torch.logit(batch["colour"], eps=1e-7)], dim=1)


def test_every_matte_term_is_zero_for_a_perfect_prediction_and_positive_otherwise() -> None:
    batch = _blend_batch()
    perfect = loss_terms(_perfect_logits(batch), batch)
    assert set(perfect) == {"footprint", "alpha", "colour", "reconstruction"}
    for name, term in perfect.items():
        assert float(term) == pytest.approx(0.0, abs=1e-3), name
    for channel, hurt in ((0, {"footprint"}), (1, {"alpha", "reconstruction"}), (3, {"colour", "reconstruction"})):
        logits = _perfect_logits(batch)
        logits[:, channel] = -logits[:, channel]  # one output wrong
        wrong = loss_terms(logits, batch)
        assert {name for name, term in wrong.items() if float(term) > 0.01} == hurt, channel


def test_pairs_without_a_matte_or_a_clean_image_train_only_the_terms_they_have() -> None:
    batch = _blend_batch(has_matte=False)
    logits = _perfect_logits(batch)
    logits[:, 1:] = 0.0  # alpha 0.5, W grey: wrong, but the matte targets are unknown
    terms = loss_terms(logits, batch)
    assert float(terms["alpha"]) == 0.0 and float(terms["colour"]) == 0.0
    assert float(terms["reconstruction"]) > 0.01  # the clean image still trains alpha and W
    logits.requires_grad_(True)
    loss_terms(logits, batch)["reconstruction"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[:, 1:].abs().sum() > 0
    neither = _blend_batch(has_matte=False, has_clean=False)
    assert all(float(term) == 0.0 for name, term in loss_terms(logits.detach(), neither).items() if name != "footprint")
    assert set(loss_terms(logits.detach()[:, :1], neither)) == {"footprint"}  # a mask network


def test_predicting_no_mark_costs_the_marks_alpha_however_small_the_mark() -> None:
    batch = _blend_batch()
    batch["mask"] = torch.zeros_like(batch["mask"])
    batch["mask"][:, :, 14:18, 10:14] = 1  # 16 of 1,024 pixels: a small corner mark
    batch["alpha"] = batch["mask"] * 0.4
    logits = _perfect_logits(batch)
    logits[:, 1] = -30.0  # alpha 0 everywhere: the mark's matte missed entirely
    missed = float(loss_terms(logits, batch)["alpha"])
    # Averaged over every pixel this would be 0.4 * 16 / 1024 = 0.006: nothing to learn from.
    assert missed == pytest.approx(0.2, abs=1e-3)
    assert float(loss_terms(_perfect_logits(batch), batch)["alpha"]) == pytest.approx(0.0, abs=1e-3)


def test_an_opaque_prediction_keeps_the_reconstruction_gradient_finite() -> None:
    batch = _blend_batch(has_matte=False)
    logits = _perfect_logits(batch)
    logits[:, 1] = 40.0  # alpha ~ 1: the unblending would divide by zero
    logits.requires_grad_(True)
    terms = loss_terms(logits, batch)
    (terms["reconstruction"] + terms["footprint"]).backward()
    assert torch.isfinite(logits.grad).all()
    assert RECONSTRUCTION_MAX_ALPHA < 1


def test_init_from_a_mask_detector_keeps_every_weight_and_the_footprint_channel(tmp_path: Path) -> None:
    mask_config = DetectorConfig(architecture="Unet", encoder="mobilenet_v2", image_size=64, decoder_channels=[16, 16, 16, 16, 8])
    torch.manual_seed(0)
    source = build_network(mask_config)
    folder = save_detector(source, mask_config, tmp_path / "mask-detector")
    matte_config = replace(mask_config, outputs="matte")
    torch.manual_seed(1)
    network = build_network(matte_config)
    fresh_head = network.segmentation_head[0].weight.detach().clone()

    _start_from_detector(network, matte_config, load_detector_folder(folder, device="cpu"), str(folder))

    seeded, original = network.state_dict(), source.state_dict()
    for name, tensor in original.items():
        if name.startswith("segmentation_head"):
            assert torch.equal(seeded[name][:1], tensor), name  # the footprint channel
        else:
            assert torch.equal(seeded[name], tensor), name  # encoder and decoder
    head = network.segmentation_head[0].weight
    assert head.shape[0] == 5 and torch.equal(head[1:], fresh_head[1:])  # alpha and W: initialised afresh
