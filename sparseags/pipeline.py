"""The whole SparseAGS procedure as one steppable state machine.

    reconstruct (round 0) → leave-one-out test → pose search per outlier → arbitration → final

* **reconstruct**: joint Gaussians + poses with every flagged view (:class:`sparseags.recon.Reconstruction`).
* **loo**: :class:`sparseags.outliers.LeaveOneOut` (its round 0 *is* the reconstruction above).
* **search**: :class:`sparseags.pose_search.PoseSearch` for every view the loop removed, rendering the
  Gaussians of the accepted round (built without the outliers).
* **arbitration** (official "final decision"): two full reconstructions with every view as an inlier,
  (a) from the recovered poses and (b) from the initial outlier poses aligned to the inlier 3D; the
  recovered poses are kept only if the mean score is not worse and every outlier improves in both
  LPIPS and MSE.
* **final**: the winning reconstruction is the result (``final_recon``).

With ``pipeline.outliers = false`` the machine stops after the first reconstruction.

Manual decisions are methods (:meth:`Pipeline.decide_outlier`, :meth:`Pipeline.apply_candidate`,
:meth:`Pipeline.choose_arbitration`, :meth:`Pipeline.set_flag`); each rewinds the machine to the point
the decision concerns and continues from there. Every decision is appended to :attr:`Pipeline.decisions`
so that a run can be replayed headless (:meth:`Pipeline.queue_decisions`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np
import torch

from sparseags.config import Config
from sparseags.errors import UserError
from sparseags.outliers import LeaveOneOut
from sparseags.pose_search import PoseSearch, build_search_grid, reference_costs, white_background_target
from sparseags.recon import Reconstruction
from sparseags.scoring import score_views
from sparseags.snapshots import ArbitrationSnapshot, EvidenceSnapshot, PipelineSnapshot

PHASES = ("reconstruct", "loo", "search", "arbitration", "done")
TRACK_POINTS = 200  # camera-track points per view in a snapshot (evenly spaced steps, the last one kept)


class PipelineError(UserError, ValueError):
    """A manual decision that does not fit the pipeline's state."""


def gaussian_centre(recon: Reconstruction) -> np.ndarray:
    """Opacity-weighted centre of the Gaussians (the official search looks at the mesh centroid)."""
    g = recon.gaussians
    with torch.no_grad():
        w = g.opacities.detach().double().cpu()
        means = g.means.detach().double().cpu()
        return (means * w[:, None]).sum(0).numpy() / max(float(w.sum()), 1e-9)


def gt_in_estimated_frame(pipeline: Any, reference_recon: Reconstruction, exclude: tuple = ()) -> Optional[np.ndarray]:
    """Ground-truth poses expressed in the estimated world frame.

    The similarity is fitted robustly (:func:`sparseags.metrics.align_similarity_robust`) on the reference
    reconstruction's inliers, minus `exclude`.
    """
    from sparseags.metrics import align_similarity_robust, transform_cameras_to_pred_frame

    scene = pipeline.scene
    if scene.w2c_gt is None:
        return None
    used = [int(i) for i in np.flatnonzero(reference_recon.flags) if int(i) not in set(exclude)]
    if len(used) < 3:
        return None
    est = reference_recon.current_w2c().detach().double().cpu().numpy()
    s, R, t = align_similarity_robust(est[used], np.asarray(scene.w2c_gt)[used])
    return transform_cameras_to_pred_frame(torch.as_tensor(scene.w2c_gt), s, R, t).numpy()


def true_cell(pipeline: Any, view: int, search: Any) -> Optional[tuple]:
    """The search-grid cell (elevation, azimuth indices) of the view's ground truth in the base frame."""
    if pipeline.base_recon is None:
        return None
    gt = gt_in_estimated_frame(pipeline, pipeline.base_recon, exclude=(view,))
    return None if gt is None else search.cell_of(gt[view])[:2]


def _placeholder_gaussians() -> Any:
    """One Gaussian: what a reconstruction holds until :meth:`Reconstruction.load_state_dict` replaces it."""
    from sparseags.gaussians import GaussianModel

    return GaussianModel.from_points(np.zeros((1, 3)), np.full((1, 3), 0.5), sh_degree=0)


def most_visible(opacities: torch.Tensor, scales: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` Gaussians with the largest opacity × footprint (0 or more than N: all)."""
    n = opacities.shape[0]
    if count <= 0 or count >= n:
        return torch.arange(n)
    footprint = scales.detach().pow(2).mean(dim=-1)  # ~ projected area up to the camera distance
    return torch.topk(opacities.detach() * footprint, count).indices.sort().values


def frozen_render_fn(recon: Reconstruction, max_gaussians: int = 0, with_alpha: bool = False) -> Callable:
    """render_fn(w2c [C,4,4], K [C,3,3], w, h) -> rgb on white, with the Gaussians frozen (pose grads only).

    With `max_gaussians` only the most visible ones are rendered (cheaper candidate renders); `with_alpha`
    returns (rgb, alpha [C, H, W]), the pose solver's render function.
    """
    frozen = recon.gaussians.detached()
    frozen = frozen.subset(most_visible(frozen.opacities, frozen.scales, max_gaussians).to(frozen.means.device))
    tensors = frozen.render_args()
    degree = frozen.sh_degree
    backend = recon.backend
    device = recon.device
    white = torch.ones(3, device=device)

    from sparseags.render import render_gaussians

    def render(w2c: torch.Tensor, K: torch.Tensor, width: int, height: int) -> torch.Tensor:
        out = render_gaussians(
            *tensors,
            w2c.to(device, torch.float32),
            K.to(device, torch.float32),
            width,
            height,
            sh_degree=degree,
            background=white,
            backend=backend,
        )
        if with_alpha:
            return out.rgb.cpu(), out.alpha[..., 0].cpu()
        return out.rgb.cpu()

    return render


def run_mean(rows: list, num_views: int) -> np.ndarray:
    """Per-view mean over the recorded steps of an evidence curve ([steps][V], nan = not rendered): [V]."""
    if not rows:
        return np.full(num_views, np.nan)
    values = np.asarray(rows, dtype=np.float64)  # [S, V]
    seen = np.isfinite(values)
    total = np.where(seen, values, 0.0).sum(axis=0)
    count = seen.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def per_view_verdict(
    scores_recovered: dict,
    scores_initial: dict,
    view: int,
    epipolar_recovered: float = float("nan"),
    epipolar_initial: float = float("nan"),
    lpips_key: str = "lpips_norm",
) -> tuple[str, str]:
    """Per-view arbitration of one searched view: ("recovered" | "initial", reason).

    The recovered pose stays if, and only if, it explains the view's own image better (LPIPS lower) and at
    least one more witness agrees (MSE lower, or the median epipolar error of its matches lower), while the
    matches do not clearly contradict it (epipolar error above 1.5 x the initial pose's + 1 px).
    """
    a, b = scores_recovered, scores_initial
    key = lpips_key if lpips_key in a else "mse_norm"
    lp_a, lp_b = float(a[key][view]), float(b[key][view])
    mse_a, mse_b = float(a["mse_norm"][view]), float(b["mse_norm"][view])
    parts = [f"{key} {lp_a:.4f} vs {lp_b:.4f}", f"mse_norm {mse_a:.4f} vs {mse_b:.4f}"]
    has_epipolar = np.isfinite(epipolar_recovered) and np.isfinite(epipolar_initial)
    if has_epipolar:
        parts.append(f"epipolar {epipolar_recovered:.1f} vs {epipolar_initial:.1f} px")
    numbers = " (recovered vs initial: " + ", ".join(parts) + ")"
    if not lp_a < lp_b:
        return "initial", f"{key} not lower at the recovered pose" + numbers
    if has_epipolar and epipolar_recovered > 1.5 * epipolar_initial + 1.0:
        return "initial", "the matches contradict the recovered pose" + numbers
    if mse_a < mse_b or (has_epipolar and epipolar_recovered < epipolar_initial):
        return "recovered", "the recovered pose explains the view better" + numbers
    return "initial", "only LPIPS prefers the recovered pose" + numbers


@dataclass
class Arbitration:
    """Final decision between each searched view's recovered pose and its initial pose aligned to the inlier 3D,
    as a steppable object.

    Two full reconstructions with every view as an inlier are trained, (a) from the recovered poses and (b)
    from the aligned initial poses. ``mode="per_view"`` (default) decides every searched view on its own
    evidence (:func:`per_view_verdict`; an ambiguous search keeps the initial pose); when the views decide
    differently, a third reconstruction from the mixed poses is the result. ``mode="paper"`` is the official
    all-or-nothing rule (mean score not worse and every outlier better in LPIPS and MSE).
    """

    pipeline: "Pipeline"
    base_w2c: np.ndarray  # [V, 4, 4] poses of the accepted round (inliers optimised)
    outliers: list  # view indices
    recovered: dict  # view index -> recovered w2c [4, 4]
    mode: str = "per_view"
    ambiguous: dict = field(default_factory=dict)  # view index -> competitors (list of dicts) when ambiguous
    # views the search corrected in their own basin (a few degrees off, not searched on the sphere): their solved
    # pose is both "recovered" and "initial"; when every view is one of them, one reconstruction decides
    local: list = field(default_factory=list)
    stage: str = "align"  # align -> recon_recovered -> recon_initial [-> recon_mixed] -> decided
    align_index: int = 0
    aligner: Optional[PoseSearch] = None
    aligned: dict = field(default_factory=dict)  # view index -> aligned initial w2c
    recon_recovered: Optional[Reconstruction] = None
    recon_initial: Optional[Reconstruction] = None
    recon_mixed: Optional[Reconstruction] = None
    mixed_for: Optional[dict] = None  # view index -> choice the mixed reconstruction was built with
    scores_recovered: Optional[dict] = None
    scores_initial: Optional[dict] = None
    scores_mixed: Optional[dict] = None
    epipolar_recovered: Optional[np.ndarray] = None  # [V] median Sampson error per view (nan: no matches)
    epipolar_initial: Optional[np.ndarray] = None
    auto_choice: Optional[str] = None  # scene level: "recovered" | "initial" | "mixed"
    manual_choice: Optional[str] = None  # scene-level override (paper mode)
    view_auto: dict = field(default_factory=dict)  # view index -> "recovered" | "initial"
    view_manual: dict = field(default_factory=dict)  # view index -> the user's choice
    view_reason: dict = field(default_factory=dict)  # view index -> why
    reason: str = ""

    def view_choice(self, view: int) -> Optional[str]:
        return self.view_manual.get(view) or self.view_auto.get(view)

    def view_choices(self) -> dict:
        return {v: self.view_choice(v) for v in self.outliers}

    @property
    def choice(self) -> Optional[str]:
        """Scene-level summary: "recovered" / "initial" when every searched view agrees, else "mixed"."""
        if self.mode == "paper":
            return self.manual_choice or self.auto_choice
        choices = set(self.view_choices().values())
        if None in choices or not choices:
            return None
        return choices.pop() if len(choices) == 1 else "mixed"

    @property
    def done(self) -> bool:
        return self.stage == "decided"

    def poses_for(self, which: Any) -> np.ndarray:
        """[V, 4, 4] poses: "recovered", "initial" (aligned), or a dict view -> choice (mixed)."""
        w2c = self.base_w2c.copy()
        for view in self.outliers:
            choice = which if isinstance(which, str) else which[view]
            pose = self.recovered.get(view) if choice == "recovered" else self.aligned.get(view)
            if pose is not None:
                w2c[view] = pose
        return w2c

    def result(self) -> tuple[Reconstruction, dict]:
        """The reconstruction and scores that stand after the decision."""
        choice = self.choice
        if choice == "recovered":
            return self.recon_recovered, self.scores_recovered
        if choice == "initial":
            return self.recon_initial, self.scores_initial
        return self.recon_mixed, self.scores_mixed

    def _train(self, name: str, poses: Any, budget: int) -> Optional[Reconstruction]:
        p = self.pipeline
        recon = getattr(self, name)
        if recon is None:
            recon = p.make_recon(np.ones(p.num_views, int), self.poses_for(poses), iters=p.arbitration_iters)
            setattr(self, name, recon)
        event = recon.step(budget)
        return recon if recon.done else event

    def step(self, budget: int = 1) -> dict:
        p = self.pipeline
        if self.stage == "align":
            if self.align_index >= len(self.outliers):
                self.stage = "recon_recovered"
                return {"phase": "arbitration", "event": "aligned"}
            view = self.outliers[self.align_index]
            if view in self.local:  # already solved in place against the inlier 3D: nothing to align
                self.aligned[view] = self.recovered[view]
                self.align_index += 1
                return {"phase": "arbitration", "stage": "align", "view": p.scene.ids[view], "event": "local"}
            if self.aligner is None:
                self.aligner = p.make_aligner(view, self.base_w2c)
            event = self.aligner.step(budget)
            if self.aligner.done:
                self.aligned[view] = self.aligner.chosen_w2c()
                self.aligner = None
                self.align_index += 1
            event.update(phase="arbitration", stage="align", view=p.scene.ids[view])
            return event
        if self.stage == "recon_recovered":
            out = self._train("recon_recovered", "recovered", budget)
            if isinstance(out, Reconstruction):
                self.scores_recovered = p.score(out)
                self.epipolar_recovered = out.view_epipolar_consistency()
                self.stage = "recon_initial"
                if self.mode != "paper" and all(v in self.local for v in self.outliers):
                    self._decide_all_local()
                out = {}
            return dict(out, phase="arbitration", stage="recovered")
        if self.stage == "recon_initial":
            out = self._train("recon_initial", "initial", budget)
            if isinstance(out, Reconstruction):
                self.scores_initial = p.score(out)
                self.epipolar_initial = out.view_epipolar_consistency()
                self._decide()
                out = {}
            return dict(out, phase="arbitration", stage="initial")
        if self.stage == "recon_mixed":
            out = self._train("recon_mixed", self.mixed_for, budget)
            if isinstance(out, Reconstruction):
                self.scores_mixed = p.score(out)
                self.stage = "decided"
                out = {}
            return dict(out, phase="arbitration", stage="mixed")
        return {"phase": "arbitration", "event": "done", "choice": self.choice}

    def _decide_all_local(self) -> None:
        """Every searched view was corrected in its own basin: the reconstruction with the solved poses stands,
        no second one is trained (its "initial" poses would be the same ones)."""
        for view in self.outliers:
            self.view_auto[view] = "recovered"
            self.view_reason[view] = "a few degrees off: corrected in place by the pose solver, not searched"
        self.auto_choice = "recovered"
        self.reason = f"per view: {len(self.outliers)} corrected in place"
        self.scores_initial, self.epipolar_initial = self.scores_recovered, self.epipolar_recovered
        self.stage = "decided"

    def _decide(self) -> None:
        if self.mode == "paper":
            self._decide_paper()
        else:
            self._decide_per_view()
        self._settle()

    def _settle(self) -> None:
        """Decided when every view agrees; otherwise train (or reuse) the reconstruction of the mixed poses."""
        if self.choice == "mixed" and self.view_choices() != self.mixed_for:
            self.mixed_for = self.view_choices()
            self.recon_mixed, self.scores_mixed = None, None
            self.stage = "recon_mixed"
        else:
            self.stage = "decided"

    def _decide_per_view(self) -> None:
        key = self.pipeline.score_key
        lp = "lpips_norm" if "lpips_norm" in self.scores_recovered else key
        for view in self.outliers:
            if view in self.ambiguous:
                angles = ", ".join(f"{c['angle_deg']:.0f}°" for c in self.ambiguous[view][:3])
                self.view_auto[view] = "initial"
                self.view_reason[view] = (
                    f"ambiguous: {len(self.ambiguous[view])} candidate(s) {angles} away from "
                    "the best score alike; the initial pose is kept"
                )
                continue
            choice, why = per_view_verdict(
                self.scores_recovered,
                self.scores_initial,
                view,
                float(self.epipolar_recovered[view]),
                float(self.epipolar_initial[view]),
                lpips_key=lp,
            )
            self.view_auto[view], self.view_reason[view] = choice, why
        counts = {c: list(self.view_auto.values()).count(c) for c in ("recovered", "initial")}
        self.auto_choice = (
            "mixed"
            if counts["recovered"] and counts["initial"]
            else ("recovered" if counts["recovered"] else "initial")
        )
        self.reason = f"per view: {counts['recovered']} recovered, {counts['initial']} initial"

    def _decide_paper(self) -> None:
        key = self.pipeline.score_key
        a, b = self.scores_recovered, self.scores_initial
        mean_a, mean_b = float(np.mean(a[key])), float(np.mean(b[key]))
        if mean_a > mean_b:
            self.auto_choice, self.reason = "initial", f"mean {key} recovered {mean_a:.4f} > initial {mean_b:.4f}"
        else:
            lp = "lpips_norm" if "lpips_norm" in a else key
            better = [bool(a[lp][v] < b[lp][v] and a["mse_norm"][v] < b["mse_norm"][v]) for v in self.outliers]
            if all(better):
                self.auto_choice = "recovered"
                self.reason = f"mean {key} {mean_a:.4f} <= {mean_b:.4f} and every outlier improves"
            else:
                self.auto_choice = "initial"
                self.reason = "not every outlier improves in both LPIPS and MSE"
        for view in self.outliers:
            self.view_auto[view], self.view_reason[view] = self.auto_choice, "scene-level rule: " + self.reason

    def choose(self, choice: str, view: Optional[int] = None) -> None:
        """The user's choice for one searched view (or all of them); may re-open the mixed reconstruction."""
        views = list(self.outliers) if view is None else [view]
        if self.mode == "paper" and view is None:
            self.manual_choice = choice
        for v in views:
            self.view_manual[v] = choice
        if self.mode == "paper" and view is not None:
            self.manual_choice = None
        self._settle()

    def snapshot(self) -> ArbitrationSnapshot:
        """The arbitration as a :class:`sparseags.snapshots.ArbitrationSnapshot`."""

        def per_view(scores):
            return None if scores is None else {k: np.asarray(v).tolist() for k, v in scores.items()}

        def view_scores(scores, epipolar, view):
            if scores is None:
                return None
            epi = None if epipolar is None or not np.isfinite(epipolar[view]) else float(epipolar[view])
            return {
                "lpips_norm": float(scores["lpips_norm"][view]) if "lpips_norm" in scores else None,
                "mse_norm": float(scores["mse_norm"][view]),
                "epipolar_px": epi,
            }

        ids = self.pipeline.scene.ids
        views = [
            {
                "view": int(v),
                "id": ids[v],
                "auto_choice": self.view_auto.get(v),
                "manual_choice": self.view_manual.get(v),
                "choice": self.view_choice(v),
                "reason": self.view_reason.get(v, ""),
                "ambiguous": v in self.ambiguous,
                "candidates": [{k: c[k] for k in ("rank", "angle_deg", "score")} for c in self.ambiguous.get(v, [])],
                "scores": {
                    "recovered": view_scores(self.scores_recovered, self.epipolar_recovered, v),
                    "initial": view_scores(self.scores_initial, self.epipolar_initial, v),
                },
            }
            for v in self.outliers
        ]
        return ArbitrationSnapshot(
            stage=self.stage,
            mode=self.mode,
            outliers=[int(v) for v in self.outliers],
            recovered={int(k): np.asarray(v, dtype=np.float64).copy() for k, v in self.recovered.items()},
            aligned={int(k): np.asarray(v, dtype=np.float64).copy() for k, v in self.aligned.items()},
            scores_recovered=per_view(self.scores_recovered),
            scores_initial=per_view(self.scores_initial),
            scores_mixed=per_view(self.scores_mixed),
            auto_choice=self.auto_choice,
            manual_choice=self.manual_choice,
            choice=self.choice,
            reason=self.reason,
            views=views,
        )

    _RECONS = (("recon_recovered", "recovered"), ("recon_initial", "initial"), ("recon_mixed", None))

    # fields saved and restored as plain copies
    _PLAIN_STATE = (
        "scores_recovered",
        "scores_initial",
        "scores_mixed",
        "epipolar_recovered",
        "epipolar_initial",
        "auto_choice",
        "manual_choice",
        "view_auto",
        "view_manual",
        "view_reason",
        "reason",
    )

    def state_dict(self) -> dict:
        state = {
            "base_w2c": self.base_w2c.copy(),
            "outliers": list(self.outliers),
            "mode": self.mode,
            "ambiguous": copy.deepcopy(self.ambiguous),
            "local": list(self.local),
            "recovered": copy.deepcopy(self.recovered),
            "stage": self.stage,
            "align_index": self.align_index,
            "aligner": None if self.aligner is None else self.aligner.state_dict(),
            "aligned": copy.deepcopy(self.aligned),
            "mixed_for": copy.deepcopy(self.mixed_for),
        }
        for name, _ in self._RECONS:
            recon = getattr(self, name)
            state[name] = None if recon is None else recon.state_dict()
        for name in self._PLAIN_STATE:
            state[name] = copy.deepcopy(getattr(self, name))
        return state

    @classmethod
    def from_state(cls, pipeline: "Pipeline", state: dict) -> "Arbitration":
        arb = cls(
            pipeline,
            np.asarray(state["base_w2c"]),
            list(state["outliers"]),
            dict(state["recovered"]),
            mode=state.get("mode", "paper"),
            ambiguous=dict(state.get("ambiguous", {})),
            local=list(state.get("local", [])),
        )
        arb.stage, arb.align_index = state["stage"], state["align_index"]
        arb.aligned = dict(state["aligned"])
        arb.mixed_for = state.get("mixed_for")
        if state["aligner"] is not None:
            view = arb.outliers[arb.align_index]
            arb.aligner = pipeline.make_aligner(view, arb.base_w2c)
            arb.aligner.load_state_dict(state["aligner"])
        for name, poses in cls._RECONS:
            if state.get(name) is not None:
                recon = pipeline.make_recon(
                    np.ones(pipeline.num_views, int),
                    arb.poses_for(poses if poses is not None else arb.mixed_for),
                    iters=pipeline.arbitration_iters,
                )
                recon.load_state_dict(state[name])
                setattr(arb, name, recon)
        for name in cls._PLAIN_STATE:
            default = {} if name.startswith("view_") else None  # checkpoints from before per-view arbitration
            setattr(arb, name, copy.deepcopy(state.get(name, default)))
        return arb


class Pipeline:
    """reconstruct → leave-one-out → search → arbitration → done; see the module docstring."""

    def __init__(
        self,
        scene: Any,
        cfg: Config,
        device: str | torch.device = "cpu",
        lpips_metric: Any = None,
        prior_hook_factory: Optional[Callable[[], Any]] = None,
        match_cache: Any = None,
        restoring: bool = False,
    ):
        """`restoring`: a state is loaded next (:meth:`load_state_dict`: a run folder, a checkpoint). It holds
        the averaged start and every reconstruction, so the learned-match rotation averaging is skipped, and
        no Gaussians are initialised until then (opening a finished run takes a fraction of a second)."""
        self.scene = scene
        self._restoring = bool(restoring)
        self.cfg = cfg
        self.device = torch.device(device)
        self.lpips = lpips_metric
        self.prior_hook_factory = prior_hook_factory
        self.num_views = len(scene.ids)
        self.initial_flags = np.asarray(scene.flags, dtype=np.int64).copy()
        self.initial_w2c = np.asarray(scene.w2c_init, dtype=np.float64).copy()
        self.rotation_report = None
        self.rotation_linked = np.zeros(self.num_views, dtype=bool)  # views with a gated learned-match pair
        if cfg.pipeline.rotation_averaging and not restoring:
            self.initial_w2c, self.rotation_report = self._average_rotations()
            for pair in self.rotation_report.pairs:
                if pair.gated:
                    self.rotation_linked[[pair.i, pair.j]] = True
        self.matches = self._pair_matches(match_cache)
        self.score_key = "lpips_norm" if (cfg.outliers.score == "lpips" and lpips_metric is not None) else "mse_norm"
        self.round_iters = cfg.outliers.round_iters or cfg.recon.iters
        self.arbitration_iters = cfg.outliers.round_iters or cfg.recon.iters
        self.decisions: list[dict] = []
        self.pending: list[dict] = []
        self.started = time.perf_counter()
        self._reset()

    # ---------------------------------------------------------------------------------------------
    # construction helpers (also used by the phases)

    def _average_rotations(self) -> tuple[np.ndarray, Any]:
        """The starting poses with their rotations averaged over learned matches (sparseags/learned_matches.py)."""
        from .learned_matches import RotationSettings, rotation_averaging_init

        pc = self.cfg.pipeline
        settings = RotationSettings(
            min_inliers=pc.rotation_min_inliers,
            min_ratio=pc.rotation_min_ratio,
            gate_deg=pc.rotation_gate_deg,
            prior=pc.rotation_prior,
        )
        return rotation_averaging_init(self.scene, self.initial_w2c, self.initial_flags, settings)

    def _pair_matches(self, cache: Any) -> Any:
        """Verified feature matches between every pair of views (sparseags/matches.py), read from or written
        to `cache` (a .npz path, e.g. in the run folder) when given; None when neither the epipolar term,
        the guard nor the per-view evidence (``recon.evidence_every > 0``) uses them."""
        from .matches import extract_pair_matches, load_or_extract

        rc = self.cfg.recon
        if rc.lambda_epipolar <= 0.0 and not rc.guard and rc.evidence_every <= 0:
            return None
        if cache is not None:
            return load_or_extract(cache, self.scene)
        return extract_pair_matches(self.scene)

    def make_recon(self, flags: np.ndarray, w2c_init: np.ndarray, iters: Optional[int] = None) -> Reconstruction:
        hook = self.prior_hook_factory() if self.prior_hook_factory is not None else None
        recon = Reconstruction(
            self.scene,
            self.cfg,
            self.device,
            flags=np.asarray(flags),
            w2c_init=np.asarray(w2c_init),
            # while a state is being loaded, its Gaussians replace these at once: skip the visual-hull carving
            gaussians=_placeholder_gaussians() if self._restoring else None,
            prior_hook=hook,
            iters=iters,
            matches=self.matches,
        )
        recon.rotation_locked = self._rotation_locked(np.asarray(w2c_init))
        return recon

    def _rotation_locked(self, w2c_init: np.ndarray) -> np.ndarray:
        """[V] views whose rotation the learned-match averaging fixed and that start from that pose
        (``pipeline.rotation_lock``): the reconstruction then moves only their centres."""
        if not (self.cfg.pipeline.rotation_averaging and self.cfg.pipeline.rotation_lock):
            return np.zeros(self.num_views, dtype=bool)
        same = np.all(np.isclose(w2c_init, self.initial_w2c, atol=1e-9), axis=(1, 2))
        return self.rotation_linked & same

    @torch.no_grad()
    def score(self, recon: Reconstruction) -> dict:
        """Per-view scores of a reconstruction at the scene resolution (all views, outliers too)."""
        return self._render_and_score(recon)[0]

    @torch.no_grad()
    def _render_and_score(self, recon: Reconstruction) -> tuple[dict, torch.Tensor]:
        """(per-view scores, rendered alpha [V, H, W]) at the scene resolution."""
        rgb, alpha = recon.render_views()
        scores = score_views(
            rgb.clamp(0, 1).cpu(),
            alpha.cpu(),
            self.scene.images,
            self.scene.masks,
            lpips_metric=self.lpips,
            official=True,
        )
        return scores, alpha

    @torch.no_grad()
    def view_evidence(self, recon: Reconstruction) -> dict:
        """Per-view evidence of a reconstruction, each [V] (nan = not available), lower = better explained:
        "photometric" (the leave-one-out score), "epipolar" (median Sampson error of the view's verified matches
        with its most consistent inlier partner, pixels: Reconstruction.view_epipolar_consistency), "mask"
        (1 - IoU of the rendered and the photographed silhouettes), and "rgb_run" / "mask_run" (the view's
        training residuals averaged over the run)."""
        scores, alpha = self._render_and_score(recon)
        self.latest_scores = scores
        epipolar = recon.view_epipolar_consistency()
        rendered = alpha.cpu().numpy() > 0.5  # [V, H, W]
        photographed = np.asarray(self.scene.masks) > 0.5  # [V, H, W]
        union = np.logical_or(rendered, photographed).sum(axis=(1, 2))
        inter = np.logical_and(rendered, photographed).sum(axis=(1, 2))
        mask = 1.0 - inter / np.maximum(union, 1)
        evidence = {
            "photometric": np.asarray(scores[self.score_key], dtype=np.float64),
            "epipolar": np.asarray(epipolar, dtype=np.float64),
            "mask": mask.astype(np.float64),
        }
        # Training residuals averaged over the whole run: early on, before the Gaussians can bend to fit a
        # view on its own, a view that disagrees with the others stands out most (nan: never trained on).
        for kind, key in (("rgb_run", "rgb"), ("mask_run", "mask")):
            evidence[kind] = run_mean(recon.evidence.get(key, []), self.num_views)
        return evidence

    def _make_loo(self) -> LeaveOneOut:
        oc = self.cfg.outliers
        return LeaveOneOut(
            lambda f, w: self.make_recon(f, w, iters=self.round_iters),
            self.view_evidence,
            self.initial_flags,
            self.initial_w2c,
            threshold=oc.threshold,
            rule=oc.rule,
            z_threshold=oc.z_threshold,
            z_confirm=oc.z_confirm,
            confirm_drop=oc.confirm_drop,
        )

    def _restore_recon(self, flags: np.ndarray, state: dict) -> Reconstruction:
        recon = self.make_recon(flags, np.asarray(state["w2c_init"].double().numpy()), iters=int(state["iters"]))
        recon.load_state_dict(state)
        return recon

    def make_search(self, view: int, base: Reconstruction) -> PoseSearch:
        sc = self.cfg.search
        inliers = np.flatnonzero(base.flags)
        w2c = base.current_w2c().detach().double().cpu().numpy()
        grid = build_search_grid(
            w2c[inliers],
            gaussian_centre(base),
            elevation_margin_deg=sc.elevation_margin_deg,
            elevation_step_deg=sc.elevation_step_deg,
            n_azimuth=sc.n_azimuth,
            radius_margin=sc.radius_margin,
            radius_step=sc.radius_step,
        )
        lpips_fn = None
        if self.lpips is not None:
            metric = self.lpips
            lpips_fn = lambda a, b: metric(a, b).cpu()  # noqa: E731 - tiny adapter
        return PoseSearch(
            render_fn=frozen_render_fn(base, sc.max_gaussians),
            target_image=white_background_target(self.scene.images[view], self.scene.masks[view]),
            K=np.asarray(self.scene.K[view]),
            grid=grid,
            stage_steps=list(sc.stage_steps),
            stage_lr=list(sc.stage_lr),
            stage_jitter=list(sc.stage_jitter),
            stage_resolution=list(sc.stage_resolution),
            lr_gamma=sc.lr_gamma,
            replicate=sc.replicate,
            keep_fraction=sc.keep_fraction,
            keep_min=sc.keep_min,
            chunk=sc.chunk,
            lpips_fn=lpips_fn,
            rank_candidates=sc.rank_candidates,
            seed=self.cfg.seed + 1000 + view,
            view_id=self.scene.ids[view],
            ambiguity_angle_deg=self.cfg.outliers.ambiguity_angle_deg,
            ambiguity_ratio=self.cfg.outliers.ambiguity_ratio,
            refine=sc.refine,
            coarse_candidates=sc.coarse_candidates,
            coarse_max_size=sc.coarse_max_size,
            distinct_deg=sc.distinct_deg,
            **self._solver_fields(view, base, sc.solver_candidates),
            **self._local_fields(view, base, w2c),
        )

    def _local_fields(self, view: int, base: Reconstruction, w2c: np.ndarray) -> dict:
        """Solver mode's local check: the view's own pose as the search's start, and the cost below which its
        solved pose is accepted without a search (`search.local_accept_ratio` x the inliers' median cost)."""
        from sparseags.pose_solver import settings_from_config

        sc = self.cfg.search
        if sc.refine != "solver":
            return {}
        accept = None
        if sc.local_accept_ratio > 0 and sc.solver_candidates > 0:
            inliers = np.flatnonzero(base.flags)
            images = np.stack([white_background_target(self.scene.images[v], self.scene.masks[v]) for v in inliers])
            costs = reference_costs(
                frozen_render_fn(base, sc.max_gaussians, with_alpha=True),
                images,
                np.asarray(self.scene.masks, dtype=np.float32)[inliers],
                w2c[inliers],
                np.asarray(self.scene.K, dtype=np.float32)[inliers],
                gaussian_centre(base),
                settings_from_config(self.cfg),
            )
            accept = float(sc.local_accept_ratio * np.median(costs))
        return {"start_w2c": w2c[view].copy(), "local_accept_cost": accept, "local_max_move_deg": sc.local_max_move_deg}

    def _solver_fields(self, view: int, base: Reconstruction, candidates: int) -> dict:
        """PoseSearch arguments of its pose-solver stage (the shared solver, against the frozen `base`)."""
        from sparseags.pose_solver import settings_from_config

        if candidates <= 0:
            return {"solver_candidates": 0}
        return {
            "solver_candidates": int(candidates),
            "solver_render_fn": frozen_render_fn(base, self.cfg.search.max_gaussians, with_alpha=True),
            "target_mask": np.asarray(self.scene.masks[view], dtype=np.float32),
            "solver_settings": settings_from_config(self.cfg),
        }

    def make_aligner(self, view: int, base_w2c: np.ndarray) -> PoseSearch:
        """Official align_to_mesh: copies of the initial pose, jittered, refined against the inlier 3D."""
        sc = self.cfg.search
        base = self.base_recon
        copies = np.repeat(self.initial_w2c[view][None], sc.align_copies, axis=0)
        grid = build_search_grid(base_w2c[np.flatnonzero(base.flags)], gaussian_centre(base))
        grid.w2c = copies
        grid.elevations_deg, grid.azimuths_deg, grid.radii = np.zeros(1), np.zeros(1), np.zeros(sc.align_copies)
        return PoseSearch(
            render_fn=frozen_render_fn(base, sc.max_gaussians),
            target_image=white_background_target(self.scene.images[view], self.scene.masks[view]),
            K=np.asarray(self.scene.K[view]),
            grid=grid,
            stage_steps=[sc.align_steps],
            stage_lr=[5e-3],
            stage_jitter=[1e-3],
            stage_resolution=[sc.stage_resolution[-1]],
            lr_gamma=0.9,
            replicate=1,
            keep_fraction=1.0,
            keep_min=sc.align_copies,
            chunk=sc.chunk,
            lpips_fn=None,
            seed=self.cfg.seed + 2000 + view,
            view_id=self.scene.ids[view],
            **self._solver_fields(view, base, min(1, sc.solver_candidates)),
        )

    # ---------------------------------------------------------------------------------------------
    # state machine

    def _reset(self) -> None:
        self.phase = "reconstruct"
        self.total_steps = 0
        # Leave-one-out compares rounds by their scores, so round 0 must train as long as the later rounds.
        iters0 = self.round_iters if self.cfg.pipeline.outliers else None
        self.recon: Optional[Reconstruction] = self.make_recon(self.initial_flags, self.initial_w2c, iters=iters0)
        self.loo: Optional[LeaveOneOut] = None
        self.base_recon: Optional[Reconstruction] = None
        self._truth_cells: dict[int, tuple] = {}  # view -> (base reconstruction, search, cell) of _truth_cell
        self.searches: dict[int, PoseSearch] = {}
        self.search_order: list[int] = []
        self.search_index = 0
        self.arbitration: Optional[Arbitration] = None
        self.final_recon: Optional[Reconstruction] = None
        self.latest_scores: Optional[dict] = None

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def step(self, budget: int = 1) -> dict:
        """Advance the current phase by up to `budget` units (optimiser iterations) and return its event."""
        if self.phase == "done":
            return {"phase": "done"}
        handler = {
            "reconstruct": self._step_reconstruct,
            "loo": self._step_loo,
            "search": self._step_search,
            "arbitration": self._step_arbitration,
        }[self.phase]
        event = handler(budget)
        self.total_steps += 1
        self._apply_pending()
        event.setdefault("phase", self.phase)
        event["pipeline_phase"] = self.phase
        return event

    def run_until(self, phase: str, max_calls: int = 10**7, budget: int = 10) -> None:
        """Step until the machine reaches `phase` (or finishes)."""
        if phase not in PHASES:
            raise PipelineError(f"unknown phase {phase!r}; phases are {', '.join(PHASES)}")
        for _ in range(max_calls):
            if self.phase == phase or self.done:
                return
            self.step(budget)

    def _step_reconstruct(self, budget: int) -> dict:
        assert self.recon is not None
        if not self.recon.done:
            return self.recon.step(budget)
        if not self.cfg.pipeline.outliers:
            self.latest_scores = self.score(self.recon)
            self._finish(self.recon)
            return {"event": "reconstructed"}
        self.loo = self._make_loo()
        self.loo.start_with(self.recon)
        self.phase = "loo"
        return {"event": "reconstructed"}

    def _step_loo(self, budget: int) -> dict:
        assert self.loo is not None
        if not self.loo.done:
            event = self.loo.step(budget)
            self.recon = self.loo.recon if self.loo.recon is not None else self.recon
            return event
        final = self.loo.rounds[self.loo.final_round]
        self.base_recon = self._restore_recon(final.flags, final.recon_state)
        self.recon = self.base_recon
        # Views unticked by hand are searched too, after the ones the leave-one-out test removed.
        self.search_order = list(self.loo.outliers) + [v for v in self.hand_outliers() if v not in self.loo.outliers]
        self.search_index = 0
        self.searches = {}
        if not self.search_order:
            self.latest_scores = self.score(self.base_recon)
            self._finish(self.base_recon)
            return {"event": "no_outliers"}
        self.phase = "search"
        return {"event": "outliers", "outliers": [self.scene.ids[v] for v in self.search_order]}

    def _step_search(self, budget: int) -> dict:
        if self.search_index >= len(self.search_order):
            recovered = {v: self.searches[v].chosen_w2c() for v in self.search_order}
            # A search the user settled by hand is not ambiguous any more.
            ambiguous = {
                v: self.searches[v].competitors_of(self.searches[v].choice)
                for v in self.search_order
                if self.searches[v].ambiguous and self.searches[v].manual_choice is None
            }
            base_w2c = self.base_recon.current_w2c().detach().double().cpu().numpy()
            self.arbitration = Arbitration(
                self,
                base_w2c,
                list(self.search_order),
                recovered,
                mode=self.cfg.outliers.arbitration,
                ambiguous=ambiguous,
                local=[v for v in self.search_order if self.searches[v].corrected_locally],
            )
            self.phase = "arbitration"
            return {"event": "searched"}
        view = self.search_order[self.search_index]
        if view not in self.searches:
            self.searches[view] = self.make_search(view, self.base_recon)
        search = self.searches[view]
        event = search.step(budget)
        if search.done:
            self.search_index += 1
        return event

    def _step_arbitration(self, budget: int) -> dict:
        arb = self.arbitration
        assert arb is not None
        if not arb.done:
            event = arb.step(budget)
            active = arb.recon_mixed or arb.recon_initial or arb.recon_recovered
            if active is not None:
                self.recon = active
            return event
        chosen, self.latest_scores = arb.result()
        self._finish(chosen)
        return {"event": "arbitrated", "choice": arb.choice}

    def _finish(self, recon: Reconstruction) -> None:
        self.final_recon = recon
        self.recon = recon
        self.phase = "done"

    # ---------------------------------------------------------------------------------------------
    # manual decisions

    def _log(self, entry: dict) -> None:
        entry = dict(
            entry,
            phase=self.phase,
            total_steps=self.total_steps,
            elapsed_s=round(time.perf_counter() - self.started, 3),
        )
        self.decisions.append(entry)

    def restart(self, flags: Optional[np.ndarray] = None) -> None:
        """Start again from the first reconstruction, optionally with other initial flags (1 inlier, 0 outlier)."""
        if flags is not None:
            flags = np.asarray(flags, dtype=np.int64).reshape(-1)
            if flags.shape != (self.num_views,) or flags.sum() < 2:
                raise PipelineError(f"restart needs {self.num_views} flags with at least 2 inliers")
            self.initial_flags = flags.copy()
        self._reset()

    def hand_outliers(self) -> list[int]:
        """Views flagged 0 by hand (:meth:`set_flag`): inliers in the scene's camera file, outliers now."""
        scene_flags = np.asarray(self.scene.flags, dtype=np.int64)
        return [int(v) for v in np.flatnonzero((self.initial_flags == 0) & (scene_flags == 1))]

    def set_flag(self, view: int, flag: int) -> None:
        """Mark a view as inlier (1) or outlier (0) by hand; the pipeline restarts with the new flags.

        A view flagged 0 by hand is left out of the reconstructions and, once the leave-one-out test is
        over, pose-searched and arbitrated like the outliers the test found.
        """
        if not 0 <= view < self.num_views:
            raise PipelineError(f"view index {view} out of range 0..{self.num_views - 1}")
        flags = self.initial_flags.copy()
        flags[view] = int(bool(flag))
        if flags.sum() < 2:
            raise PipelineError("at least 2 views must stay inliers")
        self._log({"action": "set_flag", "view": self.scene.ids[view], "flag": int(bool(flag))})
        self.restart(flags)

    def decide_outlier(self, accept: bool, round_index: Optional[int] = None) -> bool:
        """Accept or reject the leave-one-out verdict on round `round_index`'s candidate.

        By default the decision overturns the latest verdict that says otherwise: "reject" the latest
        accepted removal, "accept" the latest rejected one. A decision that agrees with the verdict in
        force changes nothing: it is not logged and keeps every later phase. Returns whether it changed
        the verdict.
        """
        if self.loo is None:
            raise PipelineError("no leave-one-out verdict yet")
        decided = [r.index for r in self.loo.rounds if r.index > 0 and r.accepted is not None]
        if not decided:
            raise PipelineError("no leave-one-out verdict yet")
        if round_index is None:
            opposite = [i for i in decided if bool(self.loo.rounds[i].accepted) != bool(accept)]
            index = (opposite or decided)[-1]
        else:
            index = int(round_index)
        if index not in decided:
            raise PipelineError(f"round {index} has no verdict (rounds with a verdict: {decided})")
        if bool(self.loo.rounds[index].accepted) == bool(accept):
            return False  # a no-op: the verdict already says so
        candidate = self.loo.rounds[index].candidate
        # logged before the rewind, so the entry records where the user was when deciding
        self._log(
            {
                "action": "accept_outlier" if accept else "reject_outlier",
                "round": index,
                "view": None if candidate is None else self.scene.ids[candidate],
            }
        )
        self.loo.override(index, accept)
        # Everything after the leave-one-out phase was built on the old decision.
        self.phase = "loo"
        self.searches, self.search_order, self.search_index = {}, [], 0
        self.arbitration, self.final_recon, self.base_recon = None, None, None
        if self.loo.recon is not None:
            self.recon = self.loo.recon
        return True

    def apply_candidate(self, view: int, rank_position: int) -> None:
        """Use candidate `rank_position` of the search for `view` instead of the automatic winner."""
        search = self.searches.get(view)
        if search is None or not search.done:
            raise PipelineError(f"the search for view {self.scene.ids[view]} has not finished")
        search.apply_candidate(rank_position)
        self._log({"action": "apply_candidate", "view": self.scene.ids[view], "rank": int(rank_position)})
        if self.phase in ("arbitration", "done") and self.arbitration is not None:
            # The arbitration compared the old choice: run it again with the new one.
            self.arbitration, self.final_recon = None, None
            self.phase = "search"

    def apply_cell(self, view: int, cell: tuple) -> dict:
        """Use the hypothesis of heatmap cell ``(elevation_index, azimuth_index)`` of the search for `view`
        (:meth:`PoseSearch.cell_candidate`: its best refined candidate, else its grid pose at the best radius).
        Returns that hypothesis (``rank_position``, ``radius``, ``mse``, ``lpips``, ``w2c``)."""
        search = self.searches.get(view)
        if search is None or not search.done:
            raise PipelineError(f"the search for view {self.scene.ids[view]} has not finished")
        try:
            hypothesis = search.apply_cell(int(cell[0]), int(cell[1]))
        except ValueError as err:
            raise PipelineError(str(err)) from None
        self._log({"action": "apply_cell", "view": self.scene.ids[view], "cell": [int(cell[0]), int(cell[1])]})
        if self.phase in ("arbitration", "done") and self.arbitration is not None:
            self.arbitration, self.final_recon = None, None  # as apply_candidate: arbitrate the new choice
            self.phase = "search"
        return hypothesis

    def choose_arbitration(self, choice: str, view: Optional[int] = None) -> None:
        """Overrule the final decision: "recovered" or "initial" pose for searched view `view` (a view index),
        or for every searched view when `view` is None. When the views then disagree, the reconstruction of
        the mixed poses is trained (the arbitration phase resumes)."""
        if choice not in ("recovered", "initial"):
            raise PipelineError(f"arbitration choice must be 'recovered' or 'initial', not {choice!r}")
        if self.arbitration is None or not self.arbitration.done:
            raise PipelineError("the arbitration has not decided yet")
        arb = self.arbitration
        if view is not None and view not in arb.outliers:
            searched = ", ".join(self.scene.ids[v] for v in arb.outliers)
            raise PipelineError(f"view {self.scene.ids[view]} was not searched (searched: {searched})")
        arb.choose(choice, view)
        self._log(
            {"action": "choose_arbitration", "choice": choice, "view": None if view is None else self.scene.ids[view]}
        )
        if arb.done:
            if self.phase == "done":
                chosen, self.latest_scores = arb.result()
                self._finish(chosen)
        else:
            # the mixed poses changed: train their reconstruction before finishing again
            self.final_recon = None
            self.phase = "arbitration"

    # ---------------------------------------------------------------------------------------------
    # replay of logged decisions

    def queue_decisions(self, entries: list[dict]) -> None:
        """Decisions to apply as soon as the pipeline reaches the point each one concerns."""
        for entry in entries:
            action = entry.get("action")
            if action not in (
                "set_flag",
                "accept_outlier",
                "reject_outlier",
                "apply_candidate",
                "apply_cell",
                "choose_arbitration",
            ):
                raise PipelineError(f"unknown decision action {action!r}")
        self.pending.extend(dict(e) for e in entries)
        self._apply_pending()

    def _view_index(self, view_id: Any) -> int:
        ids = list(self.scene.ids)
        if str(view_id) not in ids:
            raise PipelineError(f"decision names view {view_id!r}, which the scene does not have")
        return ids.index(str(view_id))

    def _ready(self, entry: dict) -> bool:
        action = entry["action"]
        if action == "set_flag":
            return True
        if action in ("accept_outlier", "reject_outlier"):
            return self.loo is not None and any(
                r.index == entry.get("round") and r.accepted is not None for r in self.loo.rounds
            )
        if action in ("apply_candidate", "apply_cell"):
            search = self.searches.get(self._view_index(entry["view"]))
            return search is not None and search.done
        return self.arbitration is not None and self.arbitration.done

    def _apply_pending(self) -> None:
        while self.pending and self._ready(self.pending[0]):
            entry = self.pending.pop(0)
            action = entry["action"]
            if action == "set_flag":
                self.set_flag(self._view_index(entry["view"]), int(entry["flag"]))
            elif action in ("accept_outlier", "reject_outlier"):
                self.decide_outlier(action == "accept_outlier", entry.get("round"))
            elif action == "apply_candidate":
                self.apply_candidate(self._view_index(entry["view"]), int(entry["rank"]))
            elif action == "apply_cell":
                self.apply_cell(self._view_index(entry["view"]), tuple(entry["cell"]))
            else:
                view = entry.get("view")
                self.choose_arbitration(entry["choice"], None if view is None else self._view_index(view))

    # ---------------------------------------------------------------------------------------------
    # display and checkpoints

    def phase_label(self) -> str:
        if self.phase == "reconstruct":
            return "reconstruction round 0"
        if self.phase == "loo" and self.loo is not None:
            candidate = self.loo.pending_candidate()
            running = len(self.loo.rounds) - 1
            if candidate is None:
                return f"leave-one-out: reconstruction round {running}"
            return f"leave-one-out round {running}: without view {self.scene.ids[candidate]}"
        if self.phase == "search" and self.search_order:
            index = min(self.search_index, len(self.search_order) - 1)
            return f"pose search for view {self.scene.ids[self.search_order[index]]}"
        if self.phase == "arbitration" and self.arbitration is not None:
            return f"arbitration ({self.arbitration.stage})"
        return "final"

    def current_flags(self) -> np.ndarray:
        if self.recon is not None:
            return np.asarray(self.recon.flags).copy()
        return self.initial_flags.copy()

    def active_search(self) -> Optional[PoseSearch]:
        if not self.search_order:
            return None
        index = min(self.search_index, len(self.search_order) - 1)
        return self.searches.get(self.search_order[index])

    def snapshot(self, with_gaussians: bool = True) -> PipelineSnapshot:
        """The pipeline as a :class:`sparseags.snapshots.PipelineSnapshot` (the debugger's and the headless
        figures' only view of it). `with_gaussians=False` leaves out the copies of the Gaussians and of the
        camera tracks."""
        recon = self.recon
        w2c_current, picked = self.displayed_w2c()
        searches = {}
        for view, search in self.searches.items():
            snap = search.snapshot()
            searches[int(view)] = replace(
                snap,
                view=int(view),
                initial_cell=tuple(search.cell_of(self.initial_w2c[view])[:2]),
                truth_cell=self._truth_cell(int(view), search),
            )
        active = self.active_search()
        gt = self.scene.w2c_gt
        return PipelineSnapshot(
            phase=self.phase,
            phase_label=self.phase_label(),
            total_steps=int(self.total_steps),
            done=bool(self.done),
            seed=int(self.cfg.seed),
            ids=list(self.scene.ids),
            flags=np.asarray(self.current_flags()).copy(),
            initial_flags=np.asarray(self.initial_flags).copy(),
            image_size=int(self.scene.resolution),
            K=np.asarray(self.scene.K, dtype=np.float64).copy(),
            w2c_initial=np.asarray(self.initial_w2c, dtype=np.float64).copy(),
            w2c_current=w2c_current,
            picked_views=tuple(picked),
            w2c_gt=None if gt is None else np.asarray(gt, dtype=np.float64).copy(),
            w2c_gt_in_frame=self._gt_in_frame(),
            recon_step=int(recon.step_count) if recon is not None else 0,
            recon_iters=int(recon.iters) if recon is not None else 0,
            loss_warmup=bool(self.cfg.recon.loss_warmup),
            history={k: list(v) for k, v in recon.history.items()} if recon is not None else {},
            gaussians=recon.gaussians.detached("cpu").arrays() if (with_gaussians and recon is not None) else None,
            centre=gaussian_centre(recon) if recon is not None else np.zeros(3),
            camera_tracks=recon.track_centres(TRACK_POINTS) if (with_gaussians and recon is not None) else None,
            score_key=self.score_key,
            latest_scores=None
            if self.latest_scores is None
            else {k: np.asarray(v, dtype=np.float64).copy() for k, v in self.latest_scores.items()},
            loo=None if self.loo is None else self.loo.snapshot(),
            searches=searches,
            search_order=[int(v) for v in self.search_order],
            active_search=next((int(v) for v, s in self.searches.items() if s is active), None),
            arbitration=None if self.arbitration is None else self.arbitration.snapshot(),
            decisions=copy.deepcopy(self.decisions),
        )

    def displayed_w2c(self) -> tuple[np.ndarray, list[int]]:
        """The poses to show ([V, 4, 4] float64) and the views among them that show their search's pick.

        The active reconstruction's current poses, except for a view whose pose search is done while no
        arbitration reconstruction has taken that pick in yet (the search phase, or the arbitration's align
        stage): it shows the search's chosen pose, so that applying a candidate or a heatmap cell moves its
        frustum and re-renders its tile at once.
        """
        recon = self.recon
        w2c = (
            recon.current_w2c().detach().double().cpu().numpy()
            if recon is not None
            else np.asarray(self.initial_w2c, dtype=np.float64)
        ).copy()
        pending = self.phase == "search" or (
            self.phase == "arbitration" and self.arbitration is not None and self.arbitration.stage == "align"
        )
        picked = []
        if pending:
            for view, search in self.searches.items():
                if search.done:
                    try:
                        w2c[int(view)] = search.chosen_w2c()
                    except ValueError:
                        continue
                    picked.append(int(view))
        return w2c, sorted(picked)

    def _gt_in_frame(self) -> Optional[np.ndarray]:
        """Ground truth mapped into the active reconstruction's frame (None without GT or with < 3 inliers)."""
        if self.scene.w2c_gt is None or self.recon is None or int(np.sum(self.recon.flags)) < 3:
            return None
        try:
            return gt_in_estimated_frame(self, self.recon)
        except (ValueError, np.linalg.LinAlgError):
            return None

    def _truth_cell(self, view: int, search: PoseSearch) -> Optional[tuple]:
        """The search-grid cell of the view's ground truth, aligned on the base reconstruction (which no longer
        moves once the searches exist), so it is computed once per base reconstruction and search."""
        cached = self._truth_cells.get(view)
        if cached is not None and cached[0] is self.base_recon and cached[1] is search:
            return cached[2]
        try:
            cell = true_cell(self, view, search)
        except (ValueError, np.linalg.LinAlgError):
            cell = None  # too few inliers to align the ground truth
        cell = None if cell is None else tuple(cell)
        self._truth_cells[view] = (self.base_recon, search, cell)
        return cell

    def evidence_key(self, with_step: bool = True) -> Optional[tuple]:
        """What an :class:`EvidenceSnapshot` depends on (None before any reconstruction): this pipeline, the
        active reconstruction, its evidence rows and guard entries, and (`with_step`) its step."""
        recon = self.recon
        if recon is None:
            return None
        return (
            id(self),
            id(recon),
            len(recon.evidence["step"]),
            len(recon.guard_log),
            int(recon.step_count) if with_step else None,
        )

    def evidence_snapshot(
        self, resolution: int, key: Optional[tuple] = None, matches: Optional[tuple] = None
    ) -> Optional[EvidenceSnapshot]:
        """The active reconstruction's per-view evidence with its targets at most `resolution` px, and the
        scene's matches (None before any reconstruction). `key` defaults to :meth:`evidence_key`; `matches`
        (pairs, summary) from an earlier snapshot of this pipeline saves copying them again (they never change).
        """
        recon = self.recon
        if recon is None:
            return None
        if matches is None:
            found = self.matches_snapshot()
            matches = ([], None) if found is None else (list(found["pairs"]), found["summary"])
        snap = recon.snapshot(resolution=min(int(resolution), int(recon.width)), with_renders=False)
        ev = snap["evidence"]
        n_views = len(snap["ids"])

        def rows(name: str, dtype: Any = np.float64) -> np.ndarray:
            return np.asarray(ev[name], dtype=dtype).reshape(-1, n_views)

        scale = np.asarray(snap["focal_scale"], dtype=np.float64).reshape(n_views)
        K = np.asarray(self.scene.K, dtype=np.float64).copy()
        K[:, 0, 0] *= scale
        K[:, 1, 1] *= scale
        return EvidenceSnapshot(
            key=self.evidence_key() if key is None else key,
            recon_step=int(snap["step"]),
            ids=list(snap["ids"]),
            image_size=int(self.scene.resolution),
            targets=np.ascontiguousarray(snap["targets"], dtype=np.float32),
            steps=np.asarray(ev["step"], dtype=np.int64),
            rgb=rows("rgb"),
            mask=rows("mask"),
            epipolar=rows("epipolar"),
            match_inliers=rows("match_inliers", np.int64),
            epipolar_start=np.asarray(snap["epipolar_start"], dtype=np.float64).copy(),
            guard_log=[dict(entry) for entry in snap["guard_log"]],
            pose_frozen=np.asarray(snap["pose_frozen"], bool).copy(),
            focal_scale=scale,
            pose_error=snap["pose_error"],
            w2c=np.asarray(snap["w2c"], dtype=np.float64),
            K=K,
            flags=np.asarray(snap["flags"]).copy(),
            pairs=matches[0],
            match_summary=matches[1],
        )

    def matches_snapshot(self) -> Optional[dict]:
        """The scene's verified matches for display: per pair i, j and the pixel coordinates (scene image)."""
        if self.matches is None:
            return None
        return {
            "summary": self.matches.summary(),
            "pairs": [
                {
                    "i": int(p.i),
                    "j": int(p.j),
                    "xy_i": np.asarray(p.xy_i),
                    "xy_j": np.asarray(p.xy_j),
                    "verified": np.asarray(p.inlier),
                }
                for p in self.matches.pairs
            ],
        }

    def state_dict(self) -> dict:
        return {
            "phase": self.phase,
            "total_steps": self.total_steps,
            "initial_flags": self.initial_flags.copy(),
            "initial_w2c": np.asarray(self.initial_w2c, dtype=np.float64).copy(),
            "rotation_linked": self.rotation_linked.copy(),
            "recon0": self.recon.state_dict() if (self.phase == "reconstruct" and self.recon is not None) else None,
            "loo": None if self.loo is None else self.loo.state_dict(),
            "search_order": list(self.search_order),
            "search_index": self.search_index,
            "searches": {v: s.state_dict() for v, s in self.searches.items()},
            "arbitration": None if self.arbitration is None else self.arbitration.state_dict(),
            "final": self._final_state(),
            "decisions": copy.deepcopy(self.decisions),
            "pending": copy.deepcopy(self.pending),
            "latest_scores": copy.deepcopy(self.latest_scores),
        }

    def _final_state(self) -> Optional[dict]:
        """The final reconstruction's state, or the name of the reconstruction it is (an arbitration result,
        the base round) so that it is stored once."""
        if self.final_recon is None:
            return None
        flags = np.asarray(self.final_recon.flags).copy()
        for name in ("recon_recovered", "recon_initial", "recon_mixed"):
            if self.arbitration is not None and getattr(self.arbitration, name, None) is self.final_recon:
                return {"flags": flags, "recon": None, "same_as": name}
        if self.base_recon is not None and self.final_recon is self.base_recon:
            return {"flags": flags, "recon": None, "same_as": "base"}
        return {"flags": flags, "recon": self.final_recon.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._restoring = True  # every reconstruction below gets its saved Gaussians at once
        try:
            self._load_state(state)
        finally:
            self._restoring = False
        if state["recon0"] is None and self.recon is not None and self.recon.gaussians.num_gaussians <= 1:
            # a state without the running round 0 (none of the kind is written): give it real Gaussians
            iters0 = self.round_iters if self.cfg.pipeline.outliers else None
            self.recon = self.make_recon(self.initial_flags, self.initial_w2c, iters=iters0)

    def _load_state(self, state: dict) -> None:
        self.initial_flags = np.asarray(state["initial_flags"]).copy()
        if state.get("initial_w2c") is not None:  # the averaged start this run used (exact resume)
            self.initial_w2c = np.asarray(state["initial_w2c"], dtype=np.float64).copy()
            self.rotation_linked = np.asarray(state["rotation_linked"], dtype=bool).copy()
        self._reset()
        self.phase = state["phase"]
        self.total_steps = state["total_steps"]
        self.decisions = copy.deepcopy(state["decisions"])
        self.pending = copy.deepcopy(state["pending"])
        self.latest_scores = copy.deepcopy(state["latest_scores"])
        if state["recon0"] is not None:
            self.recon.load_state_dict(state["recon0"])
        if state["loo"] is not None:
            self.loo = self._make_loo()
            self.loo.load_state_dict(state["loo"])
            if self.loo.recon is not None:
                self.recon = self.loo.recon
            if self.loo.done and self.phase != "loo":
                final = self.loo.rounds[self.loo.final_round]
                self.base_recon = self._restore_recon(final.flags, final.recon_state)
                self.recon = self.base_recon
        self.search_order = list(state["search_order"])
        self.search_index = state["search_index"]
        self.searches = {}
        for view, search_state in state["searches"].items():
            search = self.make_search(view, self.base_recon)
            search.load_state_dict(search_state)
            self.searches[view] = search
        if state["arbitration"] is not None:
            self.arbitration = Arbitration.from_state(self, state["arbitration"])
        final = state["final"]
        if final is not None:
            same_as = final.get("same_as")
            if same_as == "base":
                self.final_recon = self.base_recon
            elif same_as is not None:
                self.final_recon = getattr(self.arbitration, same_as)
            else:
                self.final_recon = self._restore_recon(final["flags"], final["recon"])
            if self.final_recon is None:
                raise ValueError(f"the final reconstruction names {same_as!r}, which the state does not hold")
            self.recon = self.final_recon
