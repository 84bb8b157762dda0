"""The engine-to-display contract: frozen, documented snapshots of the steppable objects.

Every consumer of the engine's state (the debugger's worker thread, the headless figures, the tests)
reads these objects, not the steppers' attributes. A snapshot is plain data (numpy arrays, python
scalars, lists and small dicts), built by the stepper's ``snapshot()`` and never mutated afterwards.

Conventions at this boundary:

* poses are ``float64`` numpy arrays ``[V, 4, 4]``, OpenCV world-to-camera (see :mod:`sparseags.cameras`);
* views are integer indices into the scene's ``ids`` (``view_id`` is the scene's string id);
* the two pose-search heat maps are ``coarse`` (the sphere's initial MSE, before any refinement) and
  ``refined`` (after the first refinement stage), everywhere;
* a decision has an ``auto`` value (the engine's rule), an optional ``manual`` one (the user's) and the
  ``choice`` in force (manual if set, else auto).

Nested rows that are written to ``metrics.json`` as they are (leave-one-out rounds, search candidates,
per-view arbitration rows) stay dicts; their keys are listed where the field is declared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = [
    "ArbitrationSnapshot",
    "EvidenceSnapshot",
    "LooSnapshot",
    "PipelineSnapshot",
    "SearchSnapshot",
]


@dataclass(frozen=True)
class SearchSnapshot:
    """One pose search (:class:`sparseags.pose_search.PoseSearch`) for display; angles in degrees (kiui sign).

    ``E`` elevations, ``A`` azimuths and ``R`` radii make the sphere of candidate poses. MSE grids hold NaN
    where a cell has not been evaluated yet.
    """

    view_id: str  # the searched view's scene id
    stage: int  # the running refinement stage (== n_stages when done)
    n_stages: int
    n_candidates: int  # candidates alive in the running stage
    progress: float  # 0..1 of the search's optimiser iterations
    done: bool
    manual: bool  # the user applied a candidate or a cell
    elevations_deg: np.ndarray  # [E]
    azimuths_deg: np.ndarray  # [A]
    radii: np.ndarray  # [R]
    mse_coarse: np.ndarray  # [E, A, R] MSE of every sphere candidate before refinement
    mse_refined: np.ndarray  # [E, A, R] MSE after the first refinement stage
    heat_coarse: np.ndarray  # [E, A] best coarse MSE over radius
    heat_refined: np.ndarray  # [E, A] best refined MSE over radius
    best_radius: dict  # "coarse" / "refined" -> [E, A] radius of the best MSE (NaN: cell not evaluated)
    # rows of the final ranking, best first: {"rank_position", "index", "mse", "lpips" (None without LPIPS),
    # "rank_total", "cell" (e, a, r), "render" [h, w, 3]}
    top: list
    chosen: Optional[int]  # index of the chosen candidate (None until the search is done)
    chosen_cell: Optional[tuple]  # (elevation, azimuth) of the chosen pose
    ambiguous: bool  # competing candidates score within the ambiguity ratio (the initial pose is kept)
    competitors: list  # [{"rank", "angle_deg", "score"}] the candidates competing with the chosen one
    has_lpips: bool  # the final ranking used LPIPS (rank rule: rank(MSE) + rank(LPIPS))
    cell_lpips: Optional[np.ndarray]  # [E, A] best LPIPS of the final candidates descending from a cell (NaN: none)
    cell_rank: Optional[np.ndarray]  # [E, A] int, best rank position of those candidates (-1: none)
    target: np.ndarray  # [H, W, 3] the photo searched for (white background)
    # filled in by the pipeline, which knows the view's place in the scene:
    view: int = -1  # index of the searched view
    initial_cell: Optional[tuple] = None  # (elevation, azimuth) of the view's input pose
    truth_cell: Optional[tuple] = None  # (elevation, azimuth) of the ground truth mapped into the estimated frame
    # the pose-solver stage (sparseags/pose_solver.py) on the best candidates: None when off or not reached;
    # {"running", "level", "n_levels", "iteration", "cost" [C], "initial_cost" [C], "damping" [C],
    #  "last_step" [C] (radians-equivalent), "trust_radius", "accepted" [C]}
    solver: Optional[dict] = None
    # the running stage's name ("adam A/B/C", or the solver mode's "local", "score", "coarse", "fine", "rank",
    # "symmetry"; "done"), what the heat maps hold ("MSE", or the solver's "cost": RGB + silhouette, blurred), and
    # the solver mode's local check of the view's own pose: {"cost", "accept_cost", "moved_deg", "accepted"}
    stage_name: str = ""
    score_name: str = "MSE"
    local: Optional[dict] = None


@dataclass(frozen=True)
class LooSnapshot:
    """The leave-one-out loop (:class:`sparseags.outliers.LeaveOneOut`).

    ``rounds`` rows (:meth:`sparseags.outliers.Round.summary`): {"round", "candidate", "flags" [V],
    "scores" [V], "mean_inliers", "next_candidate", "mean_without_next", "auto_accept", "manual_accept",
    "accepted", "ran", "reason", "evidence" {name: [V]} or None, "z" {name: [V]} or None}.
    """

    rounds: list = field(default_factory=list)
    threshold: float = 0.05  # the paper rule's score-drop threshold
    rule: str = "paper"  # "paper" (official leave-one-out) or "relative" (robust z of the pose evidence)
    running_round: Optional[int] = None  # index of the round being reconstructed (None when finished)
    candidate: Optional[int] = None  # the view the latest round proposes to remove
    max_count: int = 0  # most views the loop may remove
    z_threshold: float = 5.0  # relative rule: removed outright at z >= this
    z_confirm: float = 3.0  # relative rule: confirmed by a leave-one-out vote between z_confirm and z_threshold
    confirm_drop: float = 0.05  # relative rule: the vote's score drop
    done: bool = False
    final_round: Optional[int] = None  # the round whose flags the loop ended with
    outliers: list = field(default_factory=list)  # view indices found to be outliers (once done)
    log: list = field(default_factory=list)  # [{"round", "event", ...}] what the loop did, in order


@dataclass(frozen=True)
class ArbitrationSnapshot:
    """The arbitration between recovered and initial poses of the searched views (:class:`Arbitration`).

    ``views`` rows (per-view mode): {"view", "id", "auto_choice", "manual_choice", "choice", "reason",
    "ambiguous", "candidates" [{"rank", "angle_deg", "score"}], "scores" {"recovered" | "initial":
    {"lpips_norm", "mse_norm", "epipolar_px"} or None}}. ``scores_*`` are per-view score lists
    {"lpips_norm", "mse_norm", ...: [V]} of each candidate reconstruction (None until it is scored).
    """

    stage: str = "align"  # align, recovered, initial, mixed, decided
    mode: str = "per_view"  # "per_view" or "paper" (one choice for all searched views)
    outliers: list = field(default_factory=list)  # searched view indices
    recovered: dict = field(default_factory=dict)  # view -> [4, 4] the search's pose, as chosen
    aligned: dict = field(default_factory=dict)  # view -> [4, 4] that pose aligned into the base frame
    scores_recovered: Optional[dict] = None
    scores_initial: Optional[dict] = None
    scores_mixed: Optional[dict] = None
    auto_choice: Optional[str] = None  # scene-level: "recovered", "initial" or "mixed"
    manual_choice: Optional[str] = None
    choice: Optional[str] = None
    reason: str = ""
    views: list = field(default_factory=list)


@dataclass(frozen=True)
class PipelineSnapshot:
    """Everything the debugger and the headless figures show of a :class:`sparseags.pipeline.Pipeline`."""

    phase: str  # reconstruct, loo, search, arbitration, done
    phase_label: str  # the phase with its round / view / stage, for a status line
    total_steps: int
    done: bool
    seed: int
    ids: list  # [V] scene view ids
    flags: np.ndarray  # [V] int, flags of the active reconstruction (1 inlier, 0 outlier)
    initial_flags: np.ndarray  # [V] int, the flags the pipeline started from (set_flag edits these)
    image_size: int  # the scene's square input resolution
    K: np.ndarray  # [V, 3, 3] pixel intrinsics at image_size
    w2c_initial: np.ndarray  # [V, 4, 4] the input poses
    w2c_current: np.ndarray  # [V, 4, 4] the poses to show now (a done search's pick until it is arbitrated)
    picked_views: tuple  # views whose w2c_current is their search's pick, not yet arbitrated
    w2c_gt: Optional[np.ndarray]  # [V, 4, 4] ground truth in its own frame (None without GT)
    w2c_gt_in_frame: Optional[np.ndarray]  # [V, 4, 4] ground truth mapped into the estimated frame (None: unknown)
    recon_step: int  # the active reconstruction's step and length (0, 0 before it exists)
    recon_iters: int
    loss_warmup: bool  # the active reconstruction weights its RGB and mask losses by step / iters
    history: dict  # "step", "rgb", "mask", "prior", "total" -> [steps] unweighted losses of the active run
    gaussians: Optional[dict]  # means [N, 3], quats [N, 4], scales [N, 3], opacities [N], sh [N, K, 3], sh_degree
    centre: np.ndarray  # [3] opacity-weighted centre of the Gaussians (zeros before any)
    camera_tracks: Optional[np.ndarray]  # [T, V, 3] camera centres of the active run over its steps (T <= 200)
    score_key: str  # the per-view score the leave-one-out test reads, e.g. "lpips_norm"
    latest_scores: Optional[dict]  # name -> [V] the latest full-resolution scores
    loo: Optional[LooSnapshot]
    searches: dict  # view index -> SearchSnapshot
    search_order: list  # view indices, in search order
    active_search: Optional[int]  # the view being searched now
    arbitration: Optional[ArbitrationSnapshot]
    decisions: list  # the user's decisions so far, as logged ({"action", ...})


@dataclass(frozen=True)
class EvidenceSnapshot:
    """Per-view pose evidence of the active reconstruction and the scene's verified matches (the debugger's
    matches and evidence panels). Building one renders every view once: ask for a new one only when `key`
    (:meth:`sparseags.pipeline.Pipeline.evidence_key`) changed."""

    key: tuple  # (pipeline, reconstruction, evidence rows, guard entries, step or None) it was built at
    recon_step: int
    ids: list
    image_size: int  # scene resolution: the match coordinates' pixel frame
    targets: np.ndarray  # [V, h, w, 3] float32 white-background inputs (h, w <= the requested resolution)
    steps: np.ndarray  # [T] steps of the evidence rows
    rgb: np.ndarray  # [T, V] RGB residual (MSE) of the views rendered in that step, NaN otherwise
    mask: np.ndarray  # [T, V] mask residual
    epipolar: np.ndarray  # [T, V] median Sampson error (px), NaN = no matches
    match_inliers: np.ndarray  # [T, V] int
    epipolar_start: np.ndarray  # [V] median Sampson error at the input poses
    guard_log: list  # [{"view", "step", "action", "reason"}] what the pose guard did
    pose_frozen: np.ndarray  # [V] bool
    focal_scale: np.ndarray  # [V]
    pose_error: Optional[dict]  # {"step", "rot_err_deg" [[V]], "rot5", "rot15", "cc10"} or None (no ground truth)
    w2c: np.ndarray  # [V, 4, 4] current poses
    K: np.ndarray  # [V, 3, 3] scene-resolution intrinsics with the current focal scales
    flags: np.ndarray  # [V]
    pairs: list = field(default_factory=list)  # [{"i", "j", "xy_i" [M, 2], "xy_j" [M, 2], "verified" [M]}]
    match_summary: Optional[dict] = None
