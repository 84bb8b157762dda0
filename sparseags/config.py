"""Typed configuration: YAML files in ``configs/`` loaded into nested dataclasses.

A configuration is built in three layers, later ones winning:

1. the dataclass defaults below (they equal ``configs/default.yaml``, the CPU-friendly defaults),
2. a YAML file (``--config F``; partial files are fine, e.g. ``configs/paper.yaml``),
3. ``key=value`` overrides from the command line, with dotted keys (``recon.iters=300``).

Values are parsed with YAML rules (``true``, ``1e-3``, ``[1, 2]``) and type-checked against the field's
annotation, so a typo in a key or a wrong type is a one-line :class:`ConfigError`, never a silent default.
Every run writes its resolved configuration (including the seed) next to its outputs with
:func:`save_config`.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from sparseags.atomic import atomic_write_text
from sparseags.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration problem, described in one line."""


@dataclass
class SceneConfig:
    # Side of the square images the engine works with; inputs are resampled and intrinsics scaled.
    resolution: int = 256
    # Initial-pose preset under <scene>/init/<name>.json; null = the scene's cameras.json.
    init: Optional[str] = None


@dataclass
class RenderConfig:
    # "auto" = gsplat on CUDA, our CPU rasterizer otherwise; or "cpu", "reference", "gsplat".
    backend: str = "auto"


@dataclass
class ReconConfig:
    """One joint Gaussians + poses reconstruction (SparseAGS stage 1, "MV-DreamGaussian")."""

    # Optimisation steps (official: 500).
    iters: int = 500
    # Initial number of Gaussians (official: 25000 on GPU; fewer is plenty on the CPU).
    num_pts: int = 4000
    # "hull" = inside the visual hull carved from the masks (better for sparse views); "ball" = official.
    init: Literal["hull", "ball"] = "hull"
    # Radius of the initial ball (official 0.3), also the fallback when carving leaves too few voxels.
    init_radius: float = 0.3
    # Resolution of the voxel grid used for visual-hull carving.
    hull_grid: int = 64
    # Highest SH degree; the active degree grows by one every `sh_degree_interval` steps.
    sh_degree: int = 3
    sh_degree_interval: int = 100
    # Adam learning rates (official values; xyz decays log-linearly from init to final over `iters`).
    lr_position_init: float = 1.0e-3
    lr_position_final: float = 2.0e-5
    spatial_lr_scale: float = 10.0
    lr_sh_dc: float = 1.0e-2
    lr_sh_rest: float = 5.0e-4
    lr_opacity: float = 5.0e-2
    lr_scaling: float = 5.0e-3
    lr_rotation: float = 5.0e-3
    # Camera pose deltas xi in se(3), applied on the side `pose_delta` names (default "camera":
    # w2c = exp(xi) @ w2c_init; sparseags.cameras.apply_pose_delta); constant Adam lr.
    optimize_cameras: bool = True
    # Official: 2.5e-4 with pose_delta "world". Our CPU default moves the camera about its own centre at
    # 1e-3, which improves poses where the official setting drifts (docs/BENCHMARKS.md, "Pose refinement").
    lr_camera: float = 1.0e-3
    # Steps before the poses start moving (0 = official: from the first step). Early Gaussians are a
    # blur that any pose explains equally badly; poses optimised against them drift.
    camera_start_step: int = 0
    # Where the pose correction acts: "world" = w2c_init @ exp(xi) (official: the world is moved about
    # its origin), "camera" = exp(xi) @ w2c_init (about the camera's own centre and axes).
    pose_delta: Literal["world", "camera", "object"] = "camera"
    # Adam lr of a per-view log focal scale (0 = focal lengths fixed, official). Estimators' focal
    # lengths are off by 5-10 %; with them fixed no pose can satisfy the epipolar geometry.
    lr_focal: float = 0.0
    # Step size of the twist's translation relative to its rotation (1 = one lr for both). Under noise that
    # rotates a camera about its own centre, a translation fixes the image shift by moving the camera
    # sideways, i.e. by changing which side of the object it sees; a smaller scale makes the image shift
    # be corrected by rotation first.
    camera_translation_scale: float = 1.0
    # Per-view evidence (RGB / mask residual, epipolar median, match inliers) is recorded every
    # `evidence_every` steps (0 = off); the guard (off by default: on the bench it rolled back views early and
    # did not keep scenes from ending worse, docs/BENCHMARKS.md) then rolls back a view whose epipolar error
    # grew above max(guard_ratio x its start, start + guard_margin_px), if it has >= guard_min_matches matches.
    # [[fraction of iters, sigma px], ...]: render and target are blurred alike by sigma (pixels of the current
    # resolution) in the RGB and mask losses from that fraction on; [] = no blur (official).
    blur_schedule: list = field(default_factory=list)
    evidence_every: int = 25
    guard: bool = False
    guard_ratio: float = 1.5
    guard_margin_px: float = 1.0
    guard_min_matches: int = 20
    # Loss weights, both warmed up linearly by s = step / iters (official 1e4 and 1e3).
    lambda_rgb: float = 1.0e4
    lambda_mask: float = 1.0e3
    loss_warmup: bool = True
    # Correspondence term (sparseags/matches.py): weight of the mean robust epipolar (Sampson) cost of the
    # verified SIFT matches between inlier views, under the current poses; 0 = off. It is not warmed up:
    # it is the model-free signal that holds the poses while the Gaussians are still a blur.
    lambda_epipolar: float = 0.0
    # Scale (pixels of the scene image) and kind ("cauchy" | "clamped" | "l2") of the robust epipolar cost.
    epipolar_scale_px: float = 2.0
    epipolar_kind: Literal["cauchy", "clamped", "l2"] = "cauchy"
    # Pose-solver passes inside the joint loop: at each listed step (completed steps), the inlier cameras are
    # solved by the shared pose solver (sparseags/pose_solver.py, `solver.*`) against the Gaussians as they
    # are then, while the model is still coarse, one LM iteration per engine step; [] = off.
    solver_steps: list = field(default_factory=list)
    # Inlier views rendered per step (0 = all, as the official code).
    views_per_step: int = 0
    # Render resolution schedule: [[step_fraction, resolution], ...]; lower resolution early is cheap on CPU.
    resolution_schedule: list = field(default_factory=lambda: [[0.0, 128], [0.5, 256]])
    # Densification (official: every 100 steps from step 100, grad threshold 0.01, ...).
    densify_from: int = 100
    densify_until: int = 3000
    densify_interval: int = 100
    densify_grad_threshold: float = 0.01
    percent_dense: float = 0.01
    densify_extent: float = 4.0
    prune_min_opacity: float = 0.01
    prune_max_scale: float = 0.4
    final_prune_max_scale: float = 0.1
    # Upper bound on the number of Gaussians (keeps CPU runs bounded).
    max_gaussians: int = 12000


@dataclass
class PriorConfig:
    """6-DoF Zero123 score distillation."""

    # "auto" = on when the checkpoint folder is complete and a GPU is present; true / false force it.
    enabled: Union[bool, Literal["auto"]] = "auto"
    # diffusers-format Zero123-XL folder and the 6-DoF fine-tune checkpoint (see checkpoints/README.md).
    model_dir: str = "checkpoints/zero123-xl-diffusers"
    ckpt_6dof: str = "checkpoints/zero123_6dof_23k.ckpt"
    # Apply the prior every n reconstruction steps (1 on GPU; larger on CPU).
    every_n_steps: int = 1
    weight: float = 1.0
    guidance_scale: float = 5.0
    t_range: list = field(default_factory=lambda: [0.02, 0.98])
    anneal_timestep: bool = True
    invert_bg_prob: float = 0.5
    # Novel-view render resolution schedule (official 128 / 256 / 512 at s < 0.3 / < 0.6 / else).
    resolution_schedule: list = field(default_factory=lambda: [[0.0, 128], [0.3, 256], [0.6, 512]])
    # Bounded auto-framing passes for the novel view (the official loop may spin forever).
    max_framing_tries: int = 10


@dataclass
class LpipsConfig:
    # Backbone: "vgg" (official outlier score) or "alex".
    net: Literal["vgg", "alex"] = "vgg"
    # Folder with the backbone weights (vgg16_features.pth / alexnet_features.pth), relative to the repository;
    # a backbone fetched on first use is saved here (see sparseags/lpips_model.py). Empty = checkpoints/lpips.
    weights_dir: str = "checkpoints/lpips"
    # Reproduce the official quirk of feeding [0, 1] images instead of [-1, 1].
    official_01_inputs: bool = False


@dataclass
class OutlierConfig:
    # Leave-one-out: keep a removal only if the others' mean score drops by at least this much.
    threshold: float = 0.05
    # Score used to rank views: "lpips" (official) or "mse".
    score: Literal["lpips", "mse"] = "lpips"
    # Reconstruction steps of every leave-one-out round and of the arbitration's reconstructions
    # (0 = recon.iters, official). Rounds are compared with each other, so they all train equally long.
    round_iters: int = 300
    # Detection rule: "relative" (default) removes the view whose evidence (photometric score, epipolar
    # residual, silhouette disagreement) stands out from the other views by a robust z-score of at least
    # `z_threshold`; "paper" is the official absolute rule (mean score must drop by `threshold`).
    rule: Literal["relative", "paper"] = "relative"
    z_threshold: float = 5.0
    # Relative rule, borderline candidates (z in [z_confirm, z_threshold)): removed if the others' mean score
    # drops by at least `confirm_drop` (a fraction of it) in the round without the candidate.
    z_confirm: float = 3.0
    confirm_drop: float = 0.05
    # Arbitration: "per_view" keeps each searched view's recovered pose only if it explains that view's own
    # image and matches better; "paper" is the official all-or-nothing decision.
    arbitration: Literal["per_view", "paper"] = "per_view"
    # A search is ambiguous when another candidate at least `ambiguity_angle_deg` away from the winner scores
    # within `ambiguity_ratio` of the winner's MSE and LPIPS; an ambiguous view keeps its initial pose.
    ambiguity_angle_deg: float = 30.0
    ambiguity_ratio: float = 1.1


@dataclass
class SearchConfig:
    """Discrete sphere pose search + continuous refinement for outlier views.

    Defaults are cut for the CPU (official numbers in configs/paper.yaml): fewer steps, lower
    resolution in the coarse stages, fewer survivors, and a subset of the Gaussians.
    """

    elevation_margin_deg: float = 20.0
    elevation_step_deg: float = 15.0
    n_azimuth: int = 24
    # Official: 0.2 beyond the inliers' radii; 0 on the CPU (the refinement moves the camera in depth anyway).
    radius_margin: float = 0.0
    radius_step: float = 0.2
    # Three refinement stages (official: 128 @ 5e-3, then 2 x 256 @ 1e-3 with jitter 0.1 and 0.01).
    stage_steps: list = field(default_factory=lambda: [24, 32, 32])
    stage_lr: list = field(default_factory=lambda: [5.0e-3, 1.0e-3, 1.0e-3])
    stage_jitter: list = field(default_factory=lambda: [0.0, 0.1, 0.01])
    lr_gamma: float = 0.99
    replicate: int = 4
    keep_fraction: float = 0.1
    keep_min: int = 16
    # Render resolution of each stage (official: 256 throughout; coarse stages are cheap at low resolution).
    stage_resolution: list = field(default_factory=lambda: [64, 96, 128])
    # Candidates rendered per batch.
    chunk: int = 64
    # Render the search with at most this many Gaussians, the most visible ones (0 = all): candidates
    # are small images, and the cost of a render grows with the number of Gaussians.
    max_gaussians: int = 3000
    # Rank only the best `rank_candidates` by MSE with LPIPS (0 = all, official).
    rank_candidates: int = 32
    # The shared pose solver (`solver.*`, focal fixed) refines the best `solver_candidates` by MSE after the
    # Adam stages, before the ranking; the arbitration's align-to-3D refines its best copy the same way. 0 = off.
    solver_candidates: int = 8
    # "solver": hypotheses refined by the shared pose solver (scored once, the best cells solved coarse, the
    # best distinct ones fine; see PoseSearch); "adam": the official camera-frame Adam stages above.
    refine: Literal["solver", "adam"] = "solver"
    coarse_candidates: int = 32
    coarse_max_size: int = 64
    distinct_deg: float = 10.0
    # Solver mode: the view's own pose is solved first; when its cost is at most `local_accept_ratio` x the
    # median cost of the inlier views (same solver level, same model) and the solver moved it at most
    # `local_max_move_deg`, the view is only a few degrees off and is corrected in place without a sphere
    # search. 0 = always search.
    local_accept_ratio: float = 2.0
    local_max_move_deg: float = 10.0
    # Arbitration's align-to-3D of the initial outlier pose (official: 64 jittered copies, 128 steps).
    align_copies: int = 16
    align_steps: int = 64


@dataclass
class SolverConfig:
    """The shared pose solver (sparseags/pose_solver.py): Levenberg-Marquardt on object-centred poses."""

    # Coarse-to-fine levels [size px, blur sigma px, LM iterations]; every level renders at the scene's
    # resolution and area-averages down (no aliasing bias at coarse levels).
    levels: list = field(default_factory=lambda: [[32, 2.0, 10], [64, 1.0, 10], [128, 1.0, 8], [256, 0.5, 6]])
    # Weight of the alpha-vs-mask residual beside the RGB residual.
    mask_weight: float = 1.0
    # Focal length: a log scale bounded by +-focal_bound with a quadratic prior towards the initial value.
    optimize_focal: bool = True
    # Focal is solved only at levels of at least this size (coarser levels do not see perspective).
    focal_min_size: int = 128
    focal_bound: float = 0.25
    focal_prior: float = 1.0e-5
    # Marquardt damping at the start of each level and the largest step (radians-equivalent) per iteration.
    damping_init: float = 1.0e-2
    trust_radius: float = 0.15
    # Silhouette-moment alignments (centroid and area of render vs mask) before the first level.
    moment_steps: int = 3
    # Finite-difference step of the Jacobian: this many pixels of image motion at the level's focal length.
    fd_pixels: float = 0.5


@dataclass
class PipelineConfig:
    # Run the leave-one-out outlier test, pose search and arbitration.
    outliers: bool = True
    # Write mesh.glb / turntable.mp4 at the end of a headless run.
    export_mesh: bool = True
    export_video: bool = True
    turntable_frames: int = 120
    turntable_resolution: int = 256
    mesh_resolution: int = 96
    # Before the first reconstruction, average the inlier cameras' rotations over ALIKED + LightGlue matches
    # (sparseags/learned_matches.py): pairs gated by inliers (>= rotation_min_inliers, >= rotation_min_ratio
    # of the matches) and by agreement with the initial relative rotation (< rotation_gate_deg); each camera
    # turns about its own centre, anchored to its initial rotation by rotation_prior.
    rotation_averaging: bool = True
    rotation_min_inliers: int = 15
    rotation_min_ratio: float = 0.6
    rotation_gate_deg: float = 25.0
    rotation_prior: float = 0.02
    # The reconstructions then keep those rotations (only the centres of the linked views move).
    rotation_lock: bool = True


@dataclass
class MetricsConfig:
    # Test-time pose refinement of each held-out novel camera before scoring it (0 = off), Adam steps and
    # learning rate; the protocol numbers at the aligned GT poses are always reported too (sparseags/quality.py).
    novel_pose_steps: int = 100
    novel_pose_lr: float = 2.0e-3
    # Also report mesh F1 / Chamfer after a rigid ICP onto the GT mesh.
    mesh_icp: bool = True
    # Surface samples per mesh for F1 / Chamfer.
    mesh_points: int = 30000


@dataclass
class GuiConfig:
    # Engine work per frame, in milliseconds (the UI stays responsive).
    frame_budget_ms: float = 50.0
    view_size: int = 512  # orbit view size (px) at the 1600 x 1000 reference layout; it scales with the window
    # "glsl" = moderngl splat shaders; "engine" = the engine's renderer.
    orbit_renderer: Literal["glsl", "engine"] = "glsl"
    # Initial window size in pixels (the window is resizable; the panels keep their proportions).
    width: int = 1600
    height: int = 1000


@dataclass
class RunConfig:
    # Checkpoints of the headless run in <out>/.checkpoint/state.pt (at every phase boundary and every
    # checkpoint_every_s seconds; 0 = after every pipeline step), for `main.py run --resume` and eval.
    # Never changes a result, so a resume may use other values here.
    checkpoints: bool = True
    checkpoint_every_s: float = 60.0


@dataclass
class Config:
    seed: int = 0
    # "auto" = cuda when available, else cpu.
    device: str = "auto"
    scene: SceneConfig = field(default_factory=SceneConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    lpips: LpipsConfig = field(default_factory=LpipsConfig)
    outliers: OutlierConfig = field(default_factory=OutlierConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    gui: GuiConfig = field(default_factory=GuiConfig)
    run: RunConfig = field(default_factory=RunConfig)


# --------------------------------------------------------------------------------------------------
# type checking of single values


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` checked (and, for int -> float, widened) against annotation `tp`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"config key '{key}': {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"config key '{key}': {value!r} is not one of {list(typing.get_args(tp))}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}': expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept what Python reads as a float.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    if tp is list or origin is list:
        if isinstance(value, list):
            return value
        raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _apply_mapping(obj: Any, mapping: dict, prefix: str) -> None:
    """Recursively set the fields of dataclass `obj` from a nested mapping, checking keys and types."""
    types_by_name = _field_types(type(obj))
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        if name not in types_by_name:
            known = ", ".join(sorted(types_by_name))
            raise ConfigError(f"unknown config key '{key}' (known here: {known})")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}' is a section; give a mapping, not {value!r}")
            _apply_mapping(current, value, key + ".")
        else:
            setattr(obj, name, _coerce(value, types_by_name[name], key))


# --------------------------------------------------------------------------------------------------
# public API


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (e.g. recon.iters=300)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML ({err.__class__.__name__})") from None
    return key.split("."), value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings to `cfg` in place (and return it)."""
    for text in overrides:
        parts, value = parse_override(text)
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        _apply_mapping(cfg, nested, "")
    return cfg


def read_yaml(path: str | os.PathLike, error: type[Exception], what: str) -> Any:
    """Parse a YAML (or JSON) file; a missing, unreadable or malformed file raises `error` in one line."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{path}: invalid YAML{where}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None


def load_yaml_file(path: str | os.PathLike) -> dict:
    data = read_yaml(path, ConfigError, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config sections")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at `path` (if any), then `overrides` (``key=value`` strings)."""
    cfg = Config()
    if path is not None:
        _apply_mapping(cfg, load_yaml_file(path), "")
    apply_overrides(cfg, list(overrides or []))
    return cfg


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict) -> Config:
    """The inverse of :func:`config_to_dict` (a saved run's resolved config), with the same type checks
    as a YAML file: an unknown key or a wrong type is a ConfigError."""
    cfg = Config()
    _apply_mapping(cfg, dict(data), "")
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config (with its seed) as YAML, atomically."""
    text = "# Resolved SparseAGS Studio configuration (defaults + file + overrides).\n"
    text += yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    return atomic_write_text(path, text)


def resolve_device(cfg: Config) -> str:
    """The torch device string for `cfg.device` ("auto" -> cuda when available)."""
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device': {cfg.device!r} requested but no CUDA device is available")
    return cfg.device
