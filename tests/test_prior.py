"""The generative prior on tiny random Zero123 models with the real class layout (CPU, no downloads)."""

from __future__ import annotations

import argparse
import copy
import math
import os
import shutil
import warnings
from types import SimpleNamespace

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers/transformers are imported: never touch the hub

import numpy as np
import pytest
import torch

from sparseags.cameras import orbit_camera, project_points, w2c_to_c2w_gl
from sparseags.config import Config, PriorConfig
from sparseags.prior import (
    NovelViewSampler,
    PrincipalPointPool,
    PriorWeightsError,
    Zero123Guidance,
    Zero123PriorHook,
    attention_block_prefixes,
    ldm_attention_key_map,
    make_prior_hook_factory,
    prior_status,
)
from sparseags.prior.ckpt_6dof import (
    LDM_UNET_PREFIX,
    SD1_DOWN_BLOCK_TYPES,
    SD1_UP_BLOCK_TYPES,
    apply_6dof_weights,
    read_state_dict,
)
from sparseags.prior.sampling import resolution_at
from sparseags.prior.synthetic import TINY, random_6dof_state_dict, write_random_6dof_ckpt, write_random_zero123
from sparseags.prior.zero123 import ViewConditions, guided_noise_per_view, load_zero123_parts, sds_gradient
from sparseags.render import RenderOutput, render_gaussians

SD1_BLOCKS = [
    ("input_blocks.1.1.", "down_blocks.0.attentions.0."),
    ("input_blocks.2.1.", "down_blocks.0.attentions.1."),
    ("input_blocks.4.1.", "down_blocks.1.attentions.0."),
    ("input_blocks.5.1.", "down_blocks.1.attentions.1."),
    ("input_blocks.7.1.", "down_blocks.2.attentions.0."),
    ("input_blocks.8.1.", "down_blocks.2.attentions.1."),
    ("middle_block.1.", "mid_block.attentions.0."),
    ("output_blocks.3.1.", "up_blocks.1.attentions.0."),
    ("output_blocks.4.1.", "up_blocks.1.attentions.1."),
    ("output_blocks.5.1.", "up_blocks.1.attentions.2."),
    ("output_blocks.6.1.", "up_blocks.2.attentions.0."),
    ("output_blocks.7.1.", "up_blocks.2.attentions.1."),
    ("output_blocks.8.1.", "up_blocks.2.attentions.2."),
    ("output_blocks.9.1.", "up_blocks.3.attentions.0."),
    ("output_blocks.10.1.", "up_blocks.3.attentions.1."),
    ("output_blocks.11.1.", "up_blocks.3.attentions.2."),
]


# --------------------------------------------------------------------------------------------------
# fixtures: one tiny model folder + checkpoint per module, loaded through the production path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("zero123")
    model_dir = write_random_zero123(root / "zero123-xl-diffusers", TINY, seed=0)
    base_unet = load_zero123_parts(model_dir).unet
    ckpt = write_random_6dof_ckpt(root / "zero123_6dof_23k.ckpt", base_unet, seed=1)
    return SimpleNamespace(model_dir=model_dir, ckpt=ckpt, base_unet=base_unet)


@pytest.fixture(scope="module")
def guidance(weights) -> Zero123Guidance:
    return Zero123Guidance.from_pretrained(weights.model_dir, weights.ckpt, device="cpu")


def three_views() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """White-background images [3, 3, 256, 256], GL poses at azimuth 0/120/240 (radius 2), focals [3, 2]."""
    generator = torch.Generator().manual_seed(3)
    images = torch.ones(3, 3, 256, 256)
    images[:, :, 64:192, 80:176] = torch.rand(3, 3, 1, 1, generator=generator)
    c2w = orbit_camera(torch.tensor([-10.0, 0.0, 15.0]), torch.tensor([0.0, 120.0, 240.0]), 2.0, dtype=torch.float64)
    focals = torch.tensor([[280.0, 282.0], [275.0, 275.0], [290.0, 288.0]], dtype=torch.float64)
    return images, c2w, focals


@pytest.fixture(scope="module")
def encoded_views(guidance) -> ViewConditions:
    guidance.set_conditions(*three_views())
    return guidance.conditions


@pytest.fixture
def conditioned(guidance, encoded_views) -> Zero123Guidance:
    """`guidance` conditioned on :func:`three_views` (encoded once per module, restored per test)."""
    guidance.conditions = ViewConditions(*(value.clone() for value in vars(encoded_views).values()))
    return guidance


# --------------------------------------------------------------------------------------------------
# key mapping and loading


def test_sd1_attention_blocks_are_the_16_official_ones():
    assert attention_block_prefixes(2, SD1_DOWN_BLOCK_TYPES, SD1_UP_BLOCK_TYPES) == SD1_BLOCKS


def test_key_map_covers_every_attention_key_and_nothing_else(weights):
    unet = weights.base_unet
    key_map = ldm_attention_key_map(unet)
    attention_keys = {k for k in unet.state_dict() if ".attentions." in k}
    assert set(key_map.values()) == attention_keys
    assert len(set(key_map.values())) == len(key_map)  # one-to-one
    ldm_blocks = {ldm for ldm, _ in SD1_BLOCKS}
    used_blocks = set()
    for ldm_key, key in key_map.items():
        assert ldm_key.startswith(LDM_UNET_PREFIX)
        block = next(b for b in ldm_blocks if ldm_key.startswith(LDM_UNET_PREFIX + b))
        used_blocks.add(block)
        # the inner name is unchanged; only the block prefix is rewritten
        assert ldm_key[len(LDM_UNET_PREFIX + block) :] == key[len(dict(SD1_BLOCKS)[block]) :]
    assert used_blocks == ldm_blocks
    assert key_map[LDM_UNET_PREFIX + "input_blocks.4.1.proj_in.weight"] == "down_blocks.1.attentions.0.proj_in.weight"
    assert (
        key_map[LDM_UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight"]
        == "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight"
    )
    assert (
        key_map[LDM_UNET_PREFIX + "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight"]
        == "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"
    )


def test_loading_replaces_exactly_the_attention_subset_and_the_projection(weights, guidance):
    ckpt = read_state_dict(weights.ckpt)
    key_map = ldm_attention_key_map(weights.base_unet)
    loaded = guidance.unet.state_dict()
    base = weights.base_unet.state_dict()
    for ldm_key, key in key_map.items():
        assert torch.equal(loaded[key], ckpt[ldm_key]), key
        assert not torch.equal(loaded[key], base[key]) or ckpt[ldm_key].numel() == 0, key
    for key in base.keys() - set(key_map.values()):  # resnets, convs, time embedding stay zero123-xl
        assert torch.equal(loaded[key], base[key]), key
    # the decoys at the real ldm names of resnet weights were not loaded
    decoy = ckpt[LDM_UNET_PREFIX + "input_blocks.1.0.in_layers.2.weight"]
    assert not torch.equal(loaded["down_blocks.0.resnets.0.conv1.weight"], decoy)
    width = TINY.width
    assert guidance.projection.proj.weight.shape == (width, width + 18)
    assert torch.equal(guidance.projection.proj.weight, ckpt["cc_projection.weight"])
    assert torch.equal(guidance.projection.proj.bias, ckpt["cc_projection.bias"])
    report = guidance.load_report
    assert report.blocks == SD1_BLOCKS and report.loaded_keys == len(key_map)
    assert report.ignored_keys == 6 and report.unexpected_keys == []
    assert guidance.dtype == torch.float32 and not any(p.requires_grad for p in guidance.unet.parameters())


def test_missing_shape_and_unexpected_keys_are_one_line_errors(weights):
    unet = copy.deepcopy(weights.base_unet)
    good = random_6dof_state_dict(unet)
    some_key = LDM_UNET_PREFIX + "output_blocks.7.1.proj_out.weight"

    missing = {k: v for k, v in good.items() if k != some_key}
    with pytest.raises(PriorWeightsError, match="1 UNet attention keys missing.*output_blocks.7.1.proj_out"):
        apply_6dof_weights(unet, missing)

    reshaped = dict(good) | {some_key: torch.zeros(3, 3)}
    with pytest.raises(PriorWeightsError, match="shapes differ"):
        apply_6dof_weights(unet, reshaped)

    extra_key = LDM_UNET_PREFIX + "input_blocks.1.1.transformer_blocks.1.attn1.to_q.weight"
    extra = dict(good) | {extra_key: torch.zeros(2)}
    with pytest.raises(PriorWeightsError, match="unexpected attention keys") as err:
        apply_6dof_weights(unet, extra)
    assert "\n" not in str(err.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, report = apply_6dof_weights(unet, extra, strict=False)
    assert report.unexpected_keys == [extra_key] and caught

    no_projection = {k: v for k, v in good.items() if not k.startswith("cc_projection")}
    with pytest.raises(PriorWeightsError, match="cc_projection"):
        apply_6dof_weights(unet, no_projection)


def test_missing_or_incomplete_weights_name_what_to_download(tmp_path, weights):
    with pytest.raises(PriorWeightsError) as err:
        Zero123Guidance.from_pretrained(tmp_path / "nowhere", weights.ckpt)
    message = str(err.value)
    assert "\n" not in message and "ashawkey/zero123-xl-diffusers" in message and "checkpoints/README.md" in message

    with pytest.raises(PriorWeightsError, match="zero123_6dof_23k.ckpt.*Google Drive"):
        Zero123Guidance.from_pretrained(weights.model_dir, tmp_path / "missing.ckpt")

    partial = tmp_path / "partial"
    shutil.copytree(weights.model_dir, partial)
    for weight_file in (partial / "unet").glob("diffusion_pytorch_model*"):
        weight_file.unlink()
    with pytest.raises(PriorWeightsError, match=r"incomplete \(missing the weights in unet/"):
        Zero123Guidance.from_pretrained(partial, weights.ckpt)

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PriorWeightsError, match="garbage.ckpt"):
        Zero123Guidance.from_pretrained(weights.model_dir, garbage)


def test_pickled_checkpoint_needs_the_one_off_conversion(tmp_path, weights):
    from sparseags.prior.convert_ckpt import main as convert_main

    lightning_like = {"state_dict": read_state_dict(weights.ckpt), "hyper_parameters": argparse.Namespace(lr=1e-4)}
    pickled = tmp_path / "pickled.ckpt"
    torch.save(lightning_like, pickled)
    with pytest.raises(PriorWeightsError, match="sparseags.prior.convert_ckpt .*--trust-pickle"):
        read_state_dict(pickled)
    converted = tmp_path / "used.safetensors"
    assert convert_main([str(pickled), str(converted), "--trust-pickle"]) == 0
    used = read_state_dict(converted)
    assert len(used) == len(ldm_attention_key_map(weights.base_unet)) + 2  # attention blocks + cc_projection
    _, report = apply_6dof_weights(copy.deepcopy(weights.base_unet), used)
    assert report.ignored_keys == 0


# --------------------------------------------------------------------------------------------------
# camera embedding


def test_camera_embedding_identity_relative_pose():
    c2w = orbit_camera(torch.tensor([-20.0, 10.0]), torch.tensor([30.0, -75.0]), 1.8, dtype=torch.float64)
    focals = torch.tensor([[300.0, 310.0], [300.0, 310.0]], dtype=torch.float64)
    embedding = Zero123Guidance.camera_embedding(c2w[0], c2w[:1], 300.0, focals[:1])
    assert embedding.shape == (1, 18)
    torch.testing.assert_close(embedding[0, :16], torch.eye(4, dtype=torch.float64).flatten(), atol=1e-12, rtol=0)
    torch.testing.assert_close(embedding[0, 16:], torch.tensor([0.0, math.log(300.0 / 310.0)], dtype=torch.float64))


def test_camera_embedding_of_a_90_degree_orbit_by_hand():
    r = 2.0
    # GL c2w (columns right, up, back, position): condition at azimuth 0 sits on +z ...
    cond = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, r], [0, 0, 0, 1]], dtype=torch.float64)
    # ... the target at azimuth 90 on +x, looking down -x (right = -z, back = +x).
    target = torch.tensor([[0, 0, 1, r], [0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(orbit_camera(0.0, 0.0, r, dtype=torch.float64), cond, atol=1e-12, rtol=0)
    torch.testing.assert_close(orbit_camera(0.0, 90.0, r, dtype=torch.float64), target, atol=1e-12, rtol=0)
    embedding = Zero123Guidance.camera_embedding(target, cond[None], 250.0, torch.tensor([[200.0, 400.0]]))
    # inv(target) @ cond: the condition camera's origin (0, 0, r) seen from the target is (-r, 0, -r).
    expected = torch.tensor([[0, 0, -1, -r], [0, 1, 0, 0], [1, 0, 0, -r], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(embedding[0, :16], expected.flatten(), atol=1e-12, rtol=0)
    torch.testing.assert_close(embedding[0, 16:], torch.tensor([math.log(1.25), math.log(0.625)], dtype=torch.float64))


def test_camera_embedding_uses_only_the_target_fx_and_batches():
    _, c2w, focals = three_views()
    scalar = Zero123Guidance.camera_embedding(c2w[0], c2w, 300.0, focals)
    pair = Zero123Guidance.camera_embedding(c2w[0], c2w, torch.tensor([300.0, 123.0]), focals)
    torch.testing.assert_close(pair, scalar)  # np.array(fx, fy) == fx: the target fy is ignored
    torch.testing.assert_close(scalar[:, 16:], torch.log(300.0 / focals))
    batched = Zero123Guidance.camera_embedding(c2w[:2], c2w, torch.tensor([[300.0, 1.0], [250.0, 1.0]]), focals)
    assert batched.shape == (2, 3, 18)
    torch.testing.assert_close(batched[0], scalar)
    torch.testing.assert_close(batched[1, :, 16:], torch.log(250.0 / focals))


# --------------------------------------------------------------------------------------------------
# SDS


def test_guidance_is_per_view_then_averaged_and_nan_safe():
    cond = torch.tensor([1.0, 3.0])[:, None]  # two views, one latent value each
    uncond = torch.tensor([0.5, 1.0])[:, None]
    eps = torch.stack([cond, uncond], dim=1).flatten(0, 1)  # [cond_0, uncond_0, cond_1, uncond_1]
    per_view = guided_noise_per_view(eps, 5.0)
    torch.testing.assert_close(per_view, torch.tensor([[0.5 + 5 * 0.5], [1.0 + 5 * 2.0]]))
    grad, nonfinite = sds_gradient(per_view, torch.tensor([[1.0]]), w=0.5)
    torch.testing.assert_close(grad, torch.tensor([[0.5 * ((3.0 + 11.0) / 2 - 1.0)]]))
    assert nonfinite == 0
    grad, nonfinite = sds_gradient(torch.tensor([[1.0, float("nan")], [1.0, 2.0]]), torch.zeros(1, 2), w=1.0)
    torch.testing.assert_close(grad, torch.tensor([[1.0, 0.0]]))
    assert nonfinite == 1


def test_timestep_anneals_from_980_to_20(guidance):
    assert [guidance.timestep(s) for s in (0.0, 0.3, 0.5, 0.995, 1.0)] == [980, 700, 500, 20, 20]
    guidance.anneal_timestep = False
    try:
        generator = torch.Generator().manual_seed(0)
        samples = [guidance.timestep(0.3, generator) for _ in range(200)]
    finally:
        guidance.anneal_timestep = True
    assert min(samples) >= 20 and max(samples) <= 980 and len(set(samples)) > 50


def test_sds_step_batches_cond_and_uncond_and_gives_a_finite_gradient(conditioned):
    seen = {}

    def capture(module, args, kwargs):
        seen["sample"], seen["context"] = args[0].clone(), kwargs["encoder_hidden_states"].clone()

    handle = conditioned.unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        rendered = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
        target = orbit_camera(-15.0, 60.0, 2.0, dtype=torch.float64)
        loss, info = conditioned.sds_loss(
            rendered, target, 270.0, step_ratio=0.3, generator=torch.Generator().manual_seed(0)
        )
        loss.backward()
    finally:
        handle.remove()
    sample, context = seen["sample"], seen["context"]
    assert sample.shape == (6, 8, 32, 32) and context.shape == (6, 1, TINY.width)
    assert torch.equal(sample[1::2, 4:], torch.zeros_like(sample[1::2, 4:]))  # uncond: zero image latent
    assert torch.equal(context[1::2], torch.zeros_like(context[1::2]))  # uncond: zero context after projection
    assert (context[0::2].abs().sum(dim=(1, 2)) > 0).all() and (sample[0::2, 4:].abs().sum(dim=(1, 2, 3)) > 0).all()
    torch.testing.assert_close(sample[0::2, 4:], conditioned.conditions.latents)
    assert torch.equal(sample[0, :4], sample[5, :4])  # every view denoises the same noisy latent
    assert info["t"] == 700 and info["w"] == pytest.approx(1.0 - float(conditioned.alphas_cumprod[700]))
    assert len(info["eps_norms"]) == 3 and info["nonfinite"] == 0
    # loss = 0.5 * |grad|^2 since the target is latents - grad
    assert float(loss.detach()) == pytest.approx(0.5 * info["grad_norm"] ** 2, rel=1e-4)
    assert torch.isfinite(rendered.grad).all() and rendered.grad.abs().sum() > 0


def test_sds_is_reproducible_with_a_generator(conditioned):
    rendered = torch.full((1, 3, 32, 32), 0.7)
    target = orbit_camera(0.0, 30.0, 2.0, dtype=torch.float64)
    first, _ = conditioned.sds_loss(rendered, target, 270.0, 0.5, torch.Generator().manual_seed(9))
    second, _ = conditioned.sds_loss(rendered, target, 270.0, 0.5, torch.Generator().manual_seed(9))
    third, _ = conditioned.sds_loss(rendered, target, 270.0, 0.5, torch.Generator().manual_seed(10))
    assert float(first) == float(second) and float(first) != float(third)


def test_sds_survives_a_nan_in_the_unet_output(conditioned):
    def poison(module, args, output):
        output.sample[0, 0, 0, 0] = float("nan")
        return output

    handle = conditioned.unet.register_forward_hook(poison)
    try:
        rendered = torch.rand(1, 3, 32, 32).requires_grad_(True)
        loss, info = conditioned.sds_loss(
            rendered, orbit_camera(0.0, 45.0, 2.0), 270.0, 0.2, torch.Generator().manual_seed(1)
        )
        loss.backward()
    finally:
        handle.remove()
    assert info["nonfinite"] == 1 and math.isfinite(float(loss.detach()))
    assert torch.isfinite(rendered.grad).all() and rendered.grad.abs().sum() > 0


def gaussians(num: int = 48, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "means": (0.3 * torch.randn(num, 3, generator=generator)).requires_grad_(True),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(num, 1),
        "scales": torch.full((num, 3), 0.08),
        "opacities": torch.full((num,), 0.8),
        "sh": 0.5 * torch.randn(num, 1, 3, generator=generator),
    }


def test_sds_gradient_reaches_the_gaussian_means(conditioned):
    g = gaussians()
    c2w = orbit_camera(-20.0, 45.0, 2.0)
    w2c = torch.linalg.inv(c2w @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])))
    K = torch.tensor([[60.0, 0.0, 32.0], [0.0, 60.0, 32.0], [0.0, 0.0, 1.0]])
    out = render_gaussians(
        g["means"],
        g["quats"],
        g["scales"],
        g["opacities"],
        g["sh"],
        w2c[None],
        K[None],
        64,
        64,
        background=torch.ones(3),
        backend="reference",
    )
    rendered = out.rgb[0].permute(2, 0, 1)[None]
    loss, _ = conditioned.sds_loss(rendered, c2w.double(), 60.0 * 256 / 64, 0.4, torch.Generator().manual_seed(2))
    loss.backward()
    assert torch.isfinite(g["means"].grad).all() and g["means"].grad.abs().sum() > 0


def test_update_poses_keeps_the_image_encodings(conditioned):
    latents = conditioned.conditions.latents.clone()
    _, c2w, _ = three_views()
    moved = c2w.clone()
    moved[:, :3, 3] *= 1.1
    conditioned.update_poses(moved)
    assert torch.equal(conditioned.conditions.latents, latents)
    torch.testing.assert_close(conditioned.conditions.c2w_gl, moved)
    with pytest.raises(ValueError, match=r"c2w_gl \[3, 4, 4\]"):
        conditioned.update_poses(moved[:2])


# --------------------------------------------------------------------------------------------------
# novel-view sampling


def fake_output(alpha: torch.Tensor) -> RenderOutput:
    """A RenderOutput around an alpha map [H, W] (grey object on the image)."""
    a = alpha[None, ..., None]
    empty = torch.zeros(1, 0)
    return RenderOutput(
        rgb=0.5 * a.expand(-1, -1, -1, 3),
        alpha=a,
        depth=a,
        means2d=empty[..., None],
        radii=empty.int(),
        visible=empty.bool(),
    )


def disc_renderer(centre_world=(0.3, 0.1, 0.0), radius_world=0.5, calls=None):
    """Renders an opaque disc facing the camera: a sphere of `radius_world` at `centre_world`."""
    centre_world = torch.tensor(centre_world, dtype=torch.float64)

    def render(w2c, K, width, height, background):
        if calls is not None:
            calls.append(K.clone())
        uv, z = project_points(centre_world[None], w2c, K)
        radius_px = float(K[0, 0]) * radius_world / float(z[0])
        v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        inside = ((u - uv[0, 0]) ** 2 + (v - uv[0, 1]) ** 2) <= radius_px**2
        return fake_output(inside.float())

    return render


def test_sampler_ranges_follow_the_condition_cameras():
    c2w = orbit_camera(
        torch.tensor([-50.0, -10.0]), torch.tensor([30.0, 100.0]), torch.tensor([2.0, 3.0]), dtype=torch.float64
    )
    sampler = NovelViewSampler()
    assert sampler.elevation_range(torch.tensor([-50.0, -10.0])) == (-80.0, 50.0)
    generator = torch.Generator().manual_seed(0)
    poses = np.array([sampler.sample_pose(c2w, generator) for _ in range(400)])
    elevation, azimuth, radius = poses.T
    assert elevation.min() >= -80 and elevation.max() < 50 and elevation.min() < -70 and elevation.max() > 40
    assert np.all(elevation == np.round(elevation))
    offset = azimuth - 30.0
    assert offset.min() >= -180 and offset.max() < 180 and offset.min() < -170 and offset.max() > 170
    np.testing.assert_allclose(radius, 2.5)


def test_resolution_schedule_and_background():
    schedule = [[0.0, 128], [0.3, 256], [0.6, 512]]
    assert [resolution_at(schedule, s) for s in (0.0, 0.29, 0.3, 0.59, 0.6, 1.0)] == [128, 128, 256, 256, 512, 512]
    c2w = orbit_camera(torch.tensor([0.0]), torch.tensor([0.0]), 2.0, dtype=torch.float64)
    sampler = NovelViewSampler(schedule, invert_bg_prob=0.5, max_tries=1)
    generator = torch.Generator().manual_seed(1)
    blacks = [
        float(sampler.sample(c2w, torch.full((1, 2), 280.0), 0.0, generator, disc_renderer()).background.sum())
        for _ in range(40)
    ]
    assert set(blacks) == {0.0, 3.0} and 10 < blacks.count(0.0) < 30


def test_empty_render_ends_framing_at_once():
    calls = []

    def empty(w2c, K, width, height, background):
        calls.append(1)
        return fake_output(torch.zeros(height, width))

    c2w = orbit_camera(torch.tensor([0.0]), torch.tensor([0.0]), 2.0, dtype=torch.float64)
    view = NovelViewSampler(max_tries=10).sample(c2w, torch.full((1, 2), 280.0), 0.0, torch.Generator(), empty)
    assert len(calls) == 1 and view.empty and not view.framed and view.framing_passes == 1


def test_framing_that_never_converges_is_bounded():
    calls = []

    def corner(w2c, K, width, height, background):  # the object stays in a corner whatever K is
        calls.append(1)
        alpha = torch.zeros(height, width)
        alpha[:8, :8] = 1.0
        return fake_output(alpha)

    c2w = orbit_camera(torch.tensor([0.0]), torch.tensor([0.0]), 2.0, dtype=torch.float64)
    view = NovelViewSampler(max_tries=4).sample(c2w, torch.full((1, 2), 280.0), 0.0, torch.Generator(), corner)
    assert len(calls) == 4 and view.framing_passes == 4 and not view.framed and view.render is None


def test_framing_recentres_and_zooms_onto_the_object():
    calls = []
    sampler = NovelViewSampler(resolution_schedule=[[0.0, 128]], max_tries=10)
    c2w = orbit_camera(torch.tensor([-20.0, 0.0]), torch.tensor([0.0, 90.0]), 2.5, dtype=torch.float64)
    view = sampler.sample(
        c2w, torch.full((2, 2), 150.0), 0.1, torch.Generator().manual_seed(4), disc_renderer(calls=calls)
    )
    assert view.framed and view.render is not None and 1 < view.framing_passes <= 10
    alpha = view.render.alpha[0, ..., 0]
    v, u = torch.nonzero(alpha > 0.5, as_tuple=True)
    centroid = torch.stack([u.double().mean(), v.double().mean()]) + 0.5
    assert torch.all((centroid * 2 - 128).abs() <= 10 + 2)  # within 10 px in 256 units (+ discretisation)
    extent = float(max(u.max() - u.min() + 1, v.max() - v.min() + 1))
    assert abs(extent**2 - (128 / 1.2) ** 2) <= 0.05 * 128**2
    cell = PrincipalPointPool.cell(view.elevation_deg, view.azimuth_deg)
    assert sampler.pool.get(cell) == pytest.approx(view.principal_point)
    assert view.principal_point != (128.0, 128.0)
    torch.testing.assert_close(calls[-1], view.K())  # the kept render is of the final camera


def test_principal_point_pool_bins():
    assert PrincipalPointPool.cell(-30.0, -180.0) == (0, 0)
    assert PrincipalPointPool.cell(0.0, 44.9) == (1, 4)
    assert PrincipalPointPool.cell(10.0, 179.0) == (1, 7)
    assert PrincipalPointPool.cell(10.0, 200.0) == (1, 0)  # wraps


# --------------------------------------------------------------------------------------------------
# hook and the auto switch


class FakeRecon:
    """The parts of the reconstruction the hook uses (sparseags/recon.py protocol)."""

    def __init__(self, flags):
        _, c2w, _ = three_views()
        self.w2c = torch.linalg.inv(c2w.float() @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])))
        rgb = np.ones((3, 64, 64, 3), dtype=np.float32)
        rgb[:, 16:48, 16:48] = np.array([0.2, 0.5, 0.8], dtype=np.float32)
        masks = np.zeros((3, 64, 64), dtype=np.float32)
        masks[:, 16:48, 16:48] = 1.0
        K = np.array([[70.0, 0.0, 32.0], [0.0, 70.0, 32.0], [0.0, 0.0, 1.0]])
        self.scene = SimpleNamespace(
            images=rgb,
            masks=masks,
            K=np.stack([K] * 3),
            ids=["a", "b", "c"],
            resolution=64,
            white_background_images=lambda: rgb * masks[..., None] + 1 - masks[..., None],
        )
        self.flags = np.array(flags)
        self.gaussians = gaussians(seed=1)

    def current_w2c(self):
        return self.w2c

    def render(self, w2c, K, width, height, background):
        g = self.gaussians
        return render_gaussians(
            g["means"],
            g["quats"],
            g["scales"],
            g["opacities"],
            g["sh"],
            w2c,
            K,
            width,
            height,
            background=background,
            backend="reference",
        )


def test_hook_conditions_on_inliers_and_returns_a_weighted_sds(guidance):
    cfg = PriorConfig(weight=2.0, resolution_schedule=[[0.0, 32]], max_framing_tries=3, every_n_steps=2)
    hook = Zero123PriorHook(guidance, cfg)
    recon = FakeRecon(flags=[1, 0, 1])
    assert hook.loss(recon, step=1, step_ratio=0.1, generator=torch.Generator()) is None  # off-step
    loss = hook.loss(recon, step=2, step_ratio=0.1, generator=torch.Generator().manual_seed(0))
    assert loss is not None and torch.isfinite(loss)
    assert guidance.conditions.latents.shape[0] == 2  # the outlier does not condition the prior
    expected_c2w = w2c_to_c2w_gl(recon.w2c[[0, 2]].double())
    torch.testing.assert_close(guidance.conditions.c2w_gl, expected_c2w)
    torch.testing.assert_close(guidance.conditions.focals, torch.full((2, 2), 70.0 * 4, dtype=torch.float64))
    stats = hook.stats()
    assert all(key.startswith("prior_") for key in stats)  # merged into the step event: no clashes
    assert stats["prior_loss"] == pytest.approx(float(loss.detach())) and stats["prior_t"] == 900
    assert len(stats["prior_eps_norms"]) == 2 and stats["prior_resolution"] == 32
    assert np.array(stats["prior_pp_pool"]).shape == (2, 8, 2)
    loss.backward()
    grad = recon.gaussians["means"].grad
    assert grad is not None and torch.isfinite(grad).all()

    hook.sampler.pool.set((1, 5), 101.0, 99.0)
    resumed = Zero123PriorHook(guidance, cfg)
    resumed.load_state_dict(hook.state_dict())
    assert torch.equal(resumed.sampler.pool.table, hook.sampler.pool.table)
    assert resumed.sampler.pool.get((1, 5)) == (101.0, 99.0)

    latents = guidance.conditions.latents
    recon.w2c = recon.w2c.clone()
    recon.w2c[:, :3, 3] *= 1.05
    hook.loss(recon, step=4, step_ratio=0.2, generator=torch.Generator().manual_seed(1))
    assert guidance.conditions.latents is latents  # same inliers: poses refreshed, images not re-encoded
    torch.testing.assert_close(guidance.conditions.c2w_gl, w2c_to_c2w_gl(recon.w2c[[0, 2]].double()))


def test_prior_status_auto_needs_weights_and_a_gpu(tmp_path, weights):
    assert prior_status(PriorConfig(enabled=False), "cpu") == (False, "prior off (prior.enabled=false)")
    missing = PriorConfig(enabled="auto", model_dir=str(tmp_path / "none"), ckpt_6dof=str(weights.ckpt))
    enabled, reason = prior_status(missing, "cuda")
    assert not enabled and "not found" in reason and "\n" not in reason
    complete = PriorConfig(enabled="auto", model_dir=str(weights.model_dir), ckpt_6dof=str(weights.ckpt))
    enabled, reason = prior_status(complete, "cpu")
    assert not enabled and "no GPU" in reason
    assert prior_status(complete, "cuda")[0]
    with pytest.raises(PriorWeightsError):
        prior_status(PriorConfig(enabled=True, model_dir=str(tmp_path / "none")), "cpu")
    forced = PriorConfig(enabled=True, model_dir=str(weights.model_dir), ckpt_6dof=str(weights.ckpt))
    assert prior_status(forced, "cpu")[0]


def test_hook_factory_is_none_with_a_notice_when_the_prior_is_off(tmp_path):
    cfg = Config()
    cfg.prior.model_dir = str(tmp_path / "none")
    factory, notice = make_prior_hook_factory(cfg, scene=None, device="cpu")
    assert factory is None and notice.startswith("prior off (auto)")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_sds_on_cuda(weights):
    guidance = Zero123Guidance.from_pretrained(weights.model_dir, weights.ckpt, device="cuda")
    assert guidance.dtype == torch.float16
    images, c2w, focals = three_views()
    guidance.set_conditions(images, c2w, focals)
    rendered = torch.rand(1, 3, 128, 128, device="cuda", requires_grad=True)
    loss, _ = guidance.sds_loss(rendered, c2w[0], 280.0, 0.5, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(rendered.grad).all() and rendered.grad.abs().sum() > 0


def test_hook_drives_the_real_reconstruction(guidance):
    from sparseags.recon import Reconstruction

    fake = FakeRecon(flags=[1, 1, 1])
    scene = SimpleNamespace(
        ids=fake.scene.ids,
        images=fake.scene.images,
        masks=fake.scene.masks,
        K=fake.scene.K,
        w2c_init=fake.w2c.double().numpy(),
        flags=np.array([1, 1, 0]),
        w2c_gt=None,
    )
    cfg = Config()
    cfg.render.backend = "reference"
    cfg.recon.iters, cfg.recon.num_pts, cfg.recon.init = 2, 200, "ball"
    cfg.recon.resolution_schedule = [[0.0, 32]]
    cfg.prior.resolution_schedule, cfg.prior.max_framing_tries = [[0.0, 32]], 2
    recon = Reconstruction(scene, cfg, "cpu", prior_hook=Zero123PriorHook(guidance, cfg.prior))
    events = [recon.step(1) for _ in range(2)]
    assert all(event["loss_prior"] > 0 and "prior_t" in event for event in events)
    assert guidance.conditions.latents.shape[0] == 2  # inliers only
    focal_256 = 70.0 * 256 / 64
    torch.testing.assert_close(guidance.conditions.focals, torch.full((2, 2), focal_256, dtype=torch.float64))
