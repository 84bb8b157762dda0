"""3D Gaussian parameters: initialisation, densification with Adam-state surgery, SH schedule, PLY I/O.

Parameters are stored *raw*, as in gsplat and 3DGS, and activated on read:

=================  ==============  ==========================================
raw parameter      shape           activated property
=================  ==============  ==========================================
``means``          [N, 3]          ``means`` (world units)
``quats``          [N, 4] wxyz     ``quats`` normalised to unit length
``log_scales``     [N, 3]          ``scales = exp(log_scales)``
``opacity_logits`` [N]             ``opacities = sigmoid(opacity_logits)``
``sh0``            [N, 1, 3]       ``sh = cat(sh0, shN)`` [N, K, 3], K = (sh_degree + 1)²
``shN``            [N, K - 1, 3]
=================  ==============  ==========================================

Colour convention (3DGS): ``rgb = SH(dir) + 0.5``, so the DC coefficient of a colour ``c`` is
``(c - 0.5) / SH_C0``.

Densification follows 3DGS / DreamGaussian (clone small, split large, prune transparent or huge) with
the view-space gradient expressed in the units the official thresholds assume: the 3DGS CUDA
rasterizer differentiates w.r.t. the NDC-like screen point, whose pixel position is
``u = ((x_ndc + 1) W - 1) / 2``, so ``dL/dx_ndc = dL/du · W/2`` (and ``H/2`` for y). Our renderers give
``dL/du`` in pixels, which :meth:`GaussianModel.add_densification_stats` converts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from plyfile import PlyData, PlyElement, PlyParseError
from scipy.spatial import cKDTree
from torch import Tensor, nn

from .atomic import atomic_output
from .cameras import project_points, quat_wxyz_to_rotmat
from .render.sh import SH_C0

PARAM_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN")
INIT_OPACITY = 0.1  # official initial opacity (sigmoid⁻¹(0.1) stored)
MIN_SQ_DIST = 1e-7  # official clamp of the mean squared 3-NN distance (simple-knn distCUDA2)


class PlyFormatError(ValueError):
    """A PLY file that is not a readable 3DGS point cloud (message names the file and the problem)."""


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC SH coefficient of an RGB colour in [0, 1] (3DGS ``RGB2SH``): ``(rgb - 0.5) / SH_C0``."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_sh0` (3DGS ``SH2RGB``)."""
    return sh0 * SH_C0 + 0.5


def num_sh_coeffs(degree: int) -> int:
    return (degree + 1) ** 2


def knn_log_scales(points: np.ndarray) -> np.ndarray:
    """Official isotropic initial scale: log(sqrt(mean squared distance to the 3 nearest neighbours)).

    points: [N, 3]. Returns [N, 3] (the same value on all axes). Uses scipy's cKDTree in place of
    simple-knn's ``distCUDA2``; the squared distance is clamped at 1e-7 as there.
    """
    n = len(points)
    if n < 2:
        return np.full((n, 3), math.log(math.sqrt(0.01)), dtype=np.float32)
    k = min(4, n)  # the query returns the point itself first
    dists, _ = cKDTree(points).query(points, k=k)
    mean_sq = np.maximum((dists[:, 1:] ** 2).mean(axis=1), MIN_SQ_DIST)
    log_scale = np.log(np.sqrt(mean_sq)).astype(np.float32)
    return np.repeat(log_scale[:, None], 3, axis=1)


@dataclass(frozen=True)
class DetachedGaussians:
    """A copy of a :class:`GaussianModel`'s activated parameters that later optimisation steps do not change.

    The one way to hand Gaussians to something that renders or exports them without autograd (the
    debugger's orbit view, turntables, meshes, the pose search's frozen renders). Built by
    :meth:`GaussianModel.detached`; the tensors need no ``torch.no_grad``.
    """

    means: Tensor  # [N, 3] world
    quats: Tensor  # [N, 4] wxyz as stored (not normalised: the renderers normalise, see unit_quats)
    scales: Tensor  # [N, 3] linear
    opacities: Tensor  # [N] in (0, 1)
    sh: Tensor  # [N, K, 3] SH coefficients, DC at index 0
    sh_degree: int  # the model's active SH degree

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def unit_quats(self) -> Tensor:  # [N, 4] wxyz, unit length (GaussianModel.quats)
        return F.normalize(self.quats, dim=-1)

    @property
    def colors(self) -> Tensor:  # [N, 3] RGB of the DC term, clamped to [0, 1]
        return sh0_to_rgb(self.sh[:, 0]).clamp(0, 1)

    def render_args(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(means, quats, scales, opacities, sh)``: the leading arguments of ``render_gaussians``
        (pass ``sh_degree=self.sh_degree``)."""
        return self.means, self.quats, self.scales, self.opacities, self.sh

    def subset(self, keep: Tensor) -> "DetachedGaussians":
        """The Gaussians selected by `keep` (an index or boolean mask over N)."""
        return DetachedGaussians(
            self.means[keep], self.quats[keep], self.scales[keep], self.opacities[keep], self.sh[keep], self.sh_degree
        )

    def arrays(self) -> dict:
        """means, unit quats, scales, opacities, sh and sh_degree as a dict (the orbit renderers' input)."""
        return {
            "means": self.means,
            "quats": self.unit_quats,
            "scales": self.scales,
            "opacities": self.opacities,
            "sh": self.sh,
            "sh_degree": self.sh_degree,
        }


class GaussianModel(nn.Module):
    """A set of 3D Gaussians with raw (optimisable) parameters in ``self.splats``.

    ``active_sh_degree`` (0 .. ``sh_degree``) is the degree renderers should use; it grows with
    :meth:`set_active_sh_degree` on the reconstruction's schedule. Densification statistics
    (``grad_accum``, ``denom``) are buffers sized like the Gaussians.
    """

    def __init__(
        self,
        means: Tensor,  # [N, 3]
        quats: Tensor,  # [N, 4] wxyz, raw
        log_scales: Tensor,  # [N, 3]
        opacity_logits: Tensor,  # [N]
        sh0: Tensor,  # [N, 1, 3]
        shN: Tensor,  # [N, K - 1, 3]
        active_sh_degree: int = 0,
    ):
        super().__init__()
        n = means.shape[0]
        expected = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,), "sh0": (n, 1, 3)}
        tensors = dict(means=means, quats=quats, log_scales=log_scales, opacity_logits=opacity_logits, sh0=sh0, shN=shN)
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                raise ValueError(f"GaussianModel: {name} has shape {tuple(tensors[name].shape)}, expected {shape}")
        if shN.ndim != 3 or shN.shape[0] != n or shN.shape[2] != 3:
            raise ValueError(f"GaussianModel: shN has shape {tuple(shN.shape)}, expected ({n}, K - 1, 3)")
        degree = math.isqrt(shN.shape[1] + 1) - 1
        if num_sh_coeffs(degree) != shN.shape[1] + 1 or degree > 3:
            raise ValueError(f"GaussianModel: shN has {shN.shape[1]} rest coefficients; expected 0, 3, 8 or 15")
        self.splats = nn.ParameterDict(
            {name: nn.Parameter(t.detach().clone().float().contiguous()) for name, t in tensors.items()}
        )
        self.sh_degree = degree
        self.active_sh_degree = min(int(active_sh_degree), degree)
        device = means.device
        self.register_buffer("grad_accum", torch.zeros(n, device=device))  # [N] Σ ||dL/d(ndc point)||
        self.register_buffer("denom", torch.zeros(n, device=device))  # [N] number of visible renders

    # ------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_points(
        cls,
        points: np.ndarray | Tensor,  # [N, 3]
        colors: np.ndarray | Tensor,  # [N, 3] RGB in [0, 1]
        sh_degree: int,
        opacity: float = INIT_OPACITY,
        device: torch.device | str = "cpu",
    ) -> "GaussianModel":
        """Isotropic Gaussians at `points` with the official kNN scale, identity rotation, given colours."""
        points_np = np.asarray(torch.as_tensor(points).detach().cpu(), dtype=np.float64)
        n = len(points_np)
        means = torch.as_tensor(points_np, dtype=torch.float32, device=device)
        quats = torch.zeros(n, 4, device=device)
        quats[:, 0] = 1.0
        log_scales = torch.as_tensor(knn_log_scales(points_np), device=device)
        logit = math.log(opacity / (1.0 - opacity))
        opacity_logits = torch.full((n,), logit, device=device)
        rgb = torch.as_tensor(colors, dtype=torch.float32).to(device)
        sh0 = rgb_to_sh0(rgb)[:, None, :]
        shN = torch.zeros(n, num_sh_coeffs(sh_degree) - 1, 3, device=device)
        return cls(means, quats, log_scales, opacity_logits, sh0, shN)

    @classmethod
    def init_ball(
        cls,
        num_pts: int,
        radius: float,
        sh_degree: int,
        generator: torch.Generator,
        center: Sequence[float] = (0.0, 0.0, 0.0),
        device: torch.device | str = "cpu",
    ) -> "GaussianModel":
        """Official initialisation: points uniform in a ball (r·cbrt(U), uniform direction), ~grey.

        The official colour is ``RGB2SH(SH2RGB(U / 255))`` = U/255 as SH DC, i.e. RGB ≈ 0.5; we draw it the
        same way. Random numbers come from `generator` (a CPU generator) for determinism.
        """
        directions = F.normalize(torch.randn(num_pts, 3, generator=generator, dtype=torch.float64), dim=-1)
        radii = radius * torch.rand(num_pts, 1, generator=generator, dtype=torch.float64).pow(1.0 / 3.0)
        points = directions * radii + torch.as_tensor(center, dtype=torch.float64)
        dc = torch.rand(num_pts, 3, generator=generator) / 255.0
        model = cls.from_points(points.numpy(), sh0_to_rgb(dc), sh_degree, device=device)
        return model

    @classmethod
    def init_visual_hull(
        cls,
        masks: np.ndarray | Tensor,  # [V, H, W] in [0, 1]
        images: np.ndarray | Tensor,  # [V, H, W, 3] RGB in [0, 1]
        w2c: np.ndarray | Tensor,  # [V, 4, 4] OpenCV
        K: np.ndarray | Tensor,  # [V, 3, 3] pixels of the mask resolution
        num_pts: int,
        sh_degree: int,
        generator: torch.Generator,
        grid: int = 64,
        max_missed_views: int | None = None,
        fallback_radius: float = 0.3,
        min_voxels: int = 8,
        device: torch.device | str = "cpu",
    ) -> "GaussianModel":
        """Gaussians sampled inside the visual hull carved from the masks at the given (initial) poses.

        A voxel of a `grid`³ box around the cameras' look-at region is kept when its centre projects
        inside the mask (> 0.5) of at least ``V - max_missed_views`` views; ``None`` = 1 miss allowed when
        V >= 4 (robust to one bad initial pose), else 0, relaxed further while the hull covers less than
        half of the masks (see :func:`carve_visual_hull`). Points are drawn uniformly (with replacement)
        among kept voxels and jittered within them; the colour of a point is the mean of the pixels it
        projects to in the views whose mask contains it (no occlusion reasoning). Falls back to
        :meth:`init_ball` (centred on the look-at point) when fewer than `min_voxels` survive.
        """
        hull = carve_visual_hull(masks, w2c, K, grid, max_missed_views)
        if len(hull.points) < min_voxels:
            return cls.init_ball(
                num_pts, fallback_radius, sh_degree, generator, center=hull.center.tolist(), device=device
            )
        pick = torch.randint(len(hull.points), (num_pts,), generator=generator)
        jitter = (torch.rand(num_pts, 3, generator=generator, dtype=torch.float64) - 0.5) * hull.voxel_size
        points = torch.as_tensor(hull.points)[pick] + jitter  # [P, 3] float64
        colors = _mean_projected_color(points, masks, images, w2c, K)
        return cls.from_points(points.numpy(), colors, sh_degree, device=device)

    def clone(self) -> "GaussianModel":
        """A detached copy (parameters, active degree; densification stats reset)."""
        return GaussianModel(
            **{name: p.detach() for name, p in self.splats.items()}, active_sh_degree=self.active_sh_degree
        )

    def detached(self, device: torch.device | str | None = None) -> DetachedGaussians:
        """The activated parameters, detached and copied (on `device`, default: the model's), at the active
        SH degree: what every renderer or exporter outside the optimisation takes."""
        with torch.no_grad():
            tensors = (
                self.splats["means"].detach().clone(),
                self.splats["quats"].detach().clone(),
                self.scales.detach(),
                self.opacities.detach(),
                self.sh.detach(),
            )
        if device is not None:
            tensors = tuple(t.to(device) for t in tensors)
        return DetachedGaussians(*tensors, sh_degree=int(self.active_sh_degree))

    # ------------------------------------------------------------------------------------------
    # activated properties
    # ------------------------------------------------------------------------------------------
    @property
    def num_gaussians(self) -> int:
        return self.splats["means"].shape[0]

    def __len__(self) -> int:
        return self.num_gaussians

    @property
    def means(self) -> Tensor:  # [N, 3]
        return self.splats["means"]

    @property
    def quats(self) -> Tensor:  # [N, 4] unit wxyz
        return F.normalize(self.splats["quats"], dim=-1)

    @property
    def scales(self) -> Tensor:  # [N, 3] linear
        return torch.exp(self.splats["log_scales"])

    @property
    def opacities(self) -> Tensor:  # [N] in (0, 1)
        return torch.sigmoid(self.splats["opacity_logits"])

    @property
    def sh(self) -> Tensor:  # [N, K, 3]
        return torch.cat([self.splats["sh0"], self.splats["shN"]], dim=1)

    def set_active_sh_degree(self, degree: int) -> None:
        self.active_sh_degree = max(0, min(int(degree), self.sh_degree))

    # ------------------------------------------------------------------------------------------
    # densification
    # ------------------------------------------------------------------------------------------
    def reset_densification_stats(self) -> None:
        n = self.num_gaussians
        self.grad_accum = torch.zeros(n, device=self.means.device)
        self.denom = torch.zeros(n, device=self.means.device)

    @torch.no_grad()
    def add_densification_stats(
        self,
        means2d_grad: Tensor,  # [C, N, 2] dL/d(pixel position)
        visible: Tensor,  # [C, N] bool
        width: int,
        height: int,
    ) -> None:
        """Accumulate ||dL/d(screen point)|| per render for visible Gaussians, in NDC-like units.

        The 3DGS rasterizer's view-space point gradient is ``dL/du · W/2`` and ``dL/dv · H/2`` (the NDC to
        pixel map has slope W/2, H/2), and the official thresholds (0.01) are in those units. Each of
        the C renders counts once, as C separate official render calls would.
        """
        scale = torch.tensor([width * 0.5, height * 0.5], device=means2d_grad.device, dtype=means2d_grad.dtype)
        norms = (means2d_grad * scale).norm(dim=-1)  # [C, N]
        visible = visible.to(norms.dtype)
        self.grad_accum += (norms * visible).sum(0)
        self.denom += visible.sum(0)

    def mean_grads(self) -> Tensor:
        """Average accumulated screen-space gradient [N] (0 where never visible, as NaN -> 0 officially)."""
        return torch.where(self.denom > 0, self.grad_accum / self.denom.clamp_min(1.0), torch.zeros_like(self.denom))

    @torch.no_grad()
    def densify_and_prune(
        self,
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
        grad_threshold: float,
        percent_dense: float,
        extent: float,
        min_opacity: float,
        max_scale: float,
        max_gaussians: int,
    ) -> dict[str, int]:
        """Official clone / split / prune step, then reset the statistics. Returns the counts.

        * clone where mean grad >= threshold and max scale <= percent_dense·extent (copy as is);
        * split where mean grad >= threshold and max scale > percent_dense·extent into 2 samples
          drawn from N(mean, R diag(s)²Rᵀ) with scales s / (0.8·2); the parent is removed;
        * prune (after densification, on all Gaussians) where opacity < min_opacity or max scale > max_scale.
        At most ``max_gaussians - N`` Gaussians are added (clone + split each add one net), taking the
        largest gradients first. The official screen-size prune is omitted: it is dead code there
        (``max_radii2D`` is zeroed before it is read).
        """
        n_before = self.num_gaussians
        grads = self.mean_grads()
        max_scales = self.scales.max(dim=-1).values
        candidates = grads >= grad_threshold
        budget = max(0, max_gaussians - n_before)
        if int(candidates.sum()) > budget:
            order = torch.argsort(
                torch.where(candidates, grads, torch.full_like(grads, -1.0)), descending=True, stable=True
            )
            capped = torch.zeros_like(candidates)
            capped[order[:budget]] = True
            candidates &= capped
        clone_mask = candidates & (max_scales <= percent_dense * extent)
        split_mask = candidates & (max_scales > percent_dense * extent)

        new_rows = {
            name: torch.cat([p.detach()[clone_mask], self._split_children(name, split_mask, generator)])
            for name, p in self.splats.items()
        }
        self._edit_rows(optimizer, keep=~split_mask, new_rows=new_rows)

        prune_mask = (self.opacities < min_opacity) | (self.scales.max(dim=-1).values > max_scale)
        self._edit_rows(optimizer, keep=~prune_mask)
        self.reset_densification_stats()
        return {
            "n_before": n_before,
            "n_cloned": int(clone_mask.sum()),
            "n_split": int(split_mask.sum()),
            "n_pruned": int(prune_mask.sum()),
            "n_after": self.num_gaussians,
        }

    @torch.no_grad()
    def prune(self, optimizer: torch.optim.Optimizer | None, min_opacity: float, max_scale: float) -> int:
        """Remove Gaussians with opacity < min_opacity or max scale > max_scale; returns how many."""
        prune_mask = (self.opacities < min_opacity) | (self.scales.max(dim=-1).values > max_scale)
        self._edit_rows(optimizer, keep=~prune_mask)
        self.reset_densification_stats()
        return int(prune_mask.sum())

    def _split_children(self, name: str, split_mask: Tensor, generator: torch.Generator, n_split: int = 2) -> Tensor:
        """Raw parameter rows of the children of the Gaussians in `split_mask` (children grouped by copy)."""
        param = self.splats[name].detach()[split_mask]
        if name == "means":
            scales = self.scales[split_mask].repeat(n_split, 1)  # [S·n, 3]
            noise = torch.randn(scales.shape, generator=generator).to(scales.device)
            samples = noise * scales
            rotations = quat_wxyz_to_rotmat(self.quats[split_mask]).repeat(n_split, 1, 1)  # [S·n, 3, 3]
            return torch.einsum("sij,sj->si", rotations, samples) + param.repeat(n_split, 1)
        if name == "log_scales":
            return (param - math.log(0.8 * n_split)).repeat(n_split, 1)
        return param.repeat(n_split, *([1] * (param.ndim - 1)))

    def _edit_rows(
        self, optimizer: torch.optim.Optimizer | None, keep: Tensor, new_rows: dict[str, Tensor] | None = None
    ) -> None:
        """Keep rows `keep` [N] of every parameter and append `new_rows`; mirror it in Adam's state.

        Appended rows get zero first and second moments (as 3DGS ``cat_tensors_to_optimizer``); removed
        rows drop their moments. The optimizer's param groups must be named by parameter (``group["name"]``).
        """
        groups = {g.get("name"): g for g in optimizer.param_groups} if optimizer is not None else {}
        for name in PARAM_NAMES:
            old = self.splats[name]
            extra = new_rows[name] if new_rows is not None else old.detach()[:0]
            new = nn.Parameter(torch.cat([old.detach()[keep], extra]).contiguous())
            group = groups.get(name)
            if group is not None:
                state = optimizer.state.pop(old, None)
                group["params"][0] = new
                if state:
                    for key in ("exp_avg", "exp_avg_sq"):
                        state[key] = torch.cat([state[key][keep], torch.zeros_like(extra)]).contiguous()
                    optimizer.state[new] = state
            self.splats[name] = new
        self.grad_accum = torch.cat([self.grad_accum[keep], self.grad_accum.new_zeros(len(extra))])
        self.denom = torch.cat([self.denom[keep], self.denom.new_zeros(len(extra))])

    # ------------------------------------------------------------------------------------------
    # (de)serialisation
    # ------------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, Tensor]:
        """Detached raw parameters plus densification stats (for checkpoints; shapes may differ per run)."""
        out = {name: p.detach().clone() for name, p in self.splats.items()}
        out["grad_accum"] = self.grad_accum.clone()
        out["denom"] = self.denom.clone()
        return out

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, Tensor], active_sh_degree: int = 0, device: torch.device | str | None = None
    ) -> "GaussianModel":
        """Inverse of :meth:`tensors` (stats optional)."""
        move = (lambda t: t.to(device)) if device is not None else (lambda t: t)
        model = cls(**{name: move(tensors[name]) for name in PARAM_NAMES}, active_sh_degree=active_sh_degree)
        if "grad_accum" in tensors:
            model.grad_accum = move(tensors["grad_accum"]).clone()
            model.denom = move(tensors["denom"]).clone()
        return model

    def save_ply(self, path: str | os.PathLike) -> Path:
        """Write the standard 3DGS PLY (binary little endian), atomically. Returns the path.

        Properties: ``x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3`` with
        f_rest channel-major (features_rest [N, K-1, 3] transposed to [N, 3, K-1]), opacity as logit,
        scales as log, rotation as raw wxyz.
        """
        path = Path(path)
        columns = self._ply_columns()
        vertex = np.empty(self.num_gaussians, dtype=[(name, "f4") for name in columns])
        for name, values in columns.items():
            vertex[name] = values
        with atomic_output(path) as tmp:
            PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))
        return path

    def _ply_columns(self) -> dict[str, np.ndarray]:
        raw = {name: p.detach().cpu().numpy().astype(np.float32) for name, p in self.splats.items()}
        n = self.num_gaussians
        columns: dict[str, np.ndarray] = {}
        for i, axis in enumerate("xyz"):
            columns[axis] = raw["means"][:, i]
        for axis in ("nx", "ny", "nz"):
            columns[axis] = np.zeros(n, dtype=np.float32)
        for i in range(3):
            columns[f"f_dc_{i}"] = raw["sh0"][:, 0, i]
        rest = raw["shN"].transpose(0, 2, 1).reshape(n, -1)  # [N, 3·(K-1)] channel-major
        for i in range(rest.shape[1]):
            columns[f"f_rest_{i}"] = rest[:, i]
        columns["opacity"] = raw["opacity_logits"]
        for i in range(3):
            columns[f"scale_{i}"] = raw["log_scales"][:, i]
        for i in range(4):
            columns[f"rot_{i}"] = raw["quats"][:, i]
        return columns

    @classmethod
    def load_ply(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "GaussianModel":
        """Read a 3DGS PLY written by :meth:`save_ply` or by 3DGS/DreamGaussian/SparseAGS.

        The SH degree is inferred from the number of ``f_rest_*`` properties (0, 9, 24 or 45) and is active.
        Raises :class:`PlyFormatError` naming the file and the problem.
        """
        path = Path(path)
        if not path.is_file():
            raise PlyFormatError(f"{path}: file not found")
        try:
            ply = PlyData.read(str(path))
        except (PlyParseError, OSError, ValueError, EOFError, KeyError, IndexError) as err:
            raise PlyFormatError(f"{path}: not a readable PLY file ({err.__class__.__name__}: {err})") from None
        if "vertex" not in ply:
            raise PlyFormatError(f"{path}: no 'vertex' element")
        vertex = ply["vertex"]
        names = {prop.name for prop in vertex.properties}
        required = (
            ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
            + [f"scale_{i}" for i in range(3)]
            + [f"rot_{i}" for i in range(4)]
        )
        missing = [name for name in required if name not in names]
        if missing:
            raise PlyFormatError(f"{path}: missing 3DGS properties {', '.join(missing)}")
        rest_names = sorted((name for name in names if name.startswith("f_rest_")), key=lambda s: int(s.split("_")[-1]))
        n_rest = len(rest_names)
        if (
            n_rest % 3 != 0
            or num_sh_coeffs(math.isqrt(n_rest // 3 + 1) - 1) != n_rest // 3 + 1
            or n_rest > 45
            or rest_names != [f"f_rest_{i}" for i in range(n_rest)]
        ):
            raise PlyFormatError(f"{path}: {n_rest} f_rest properties do not form SH degree 0..3 (0, 9, 24 or 45)")

        def stack(keys: list[str]) -> Tensor:
            return torch.as_tensor(np.stack([np.asarray(vertex[k], dtype=np.float32) for k in keys], axis=-1))

        n = len(vertex.data)
        means = stack(["x", "y", "z"])
        sh0 = stack([f"f_dc_{i}" for i in range(3)])[:, None, :]
        shN = stack(rest_names).reshape(n, 3, n_rest // 3).transpose(1, 2) if n_rest else torch.zeros(n, 0, 3)
        # a saved model is a trained one: every SH degree it stores is active
        model = cls(
            means,
            stack([f"rot_{i}" for i in range(4)]),
            stack([f"scale_{i}" for i in range(3)]),
            stack(["opacity"])[:, 0],
            sh0,
            shN,
            active_sh_degree=3,
        )
        return model.to(device)


# ----------------------------------------------------------------------------------------------
# visual hull
# ----------------------------------------------------------------------------------------------
def look_at_point(w2c: Tensor) -> Tensor:
    """Least-squares intersection of the cameras' optical axes (float64) [3]; w2c [V, 4, 4] OpenCV.

    Minimises Σ ||(I - dᵢdᵢᵀ)(p - cᵢ)||² over p, with cᵢ the centres and dᵢ the viewing directions (+z).
    Falls back to the mean centre's projection when the axes are (nearly) parallel.
    """
    w2c = w2c.double()
    rotation = w2c[:, :3, :3]
    centers = -torch.einsum("vji,vj->vi", rotation, w2c[:, :3, 3])  # [V, 3]
    directions = rotation[:, 2, :]  # [V, 3] camera +z in world coordinates
    projector = torch.eye(3, dtype=torch.float64) - directions[:, :, None] * directions[:, None, :]  # [V, 3, 3]
    lhs = projector.sum(0)
    rhs = torch.einsum("vij,vj->i", projector, centers)
    if torch.linalg.cond(lhs) > 1e8:
        return centers.mean(0) + directions.mean(0)
    return torch.linalg.solve(lhs, rhs)


def _box_half_size(masks: Tensor, w2c: Tensor, K: Tensor, center: Tensor) -> float:
    """Half side of a cube around `center` that contains what every view's mask can see, with margin.

    For each view, the mask's largest pixel offset from the projected centre, divided by the focal
    length and multiplied by the centre's depth, bounds the object's half extent seen from there.
    """
    uv, depth = project_points(center[None], w2c, K)  # [V, 1, 2], [V, 1]
    half = []
    for v in range(masks.shape[0]):
        rows, cols = torch.nonzero(masks[v] > 0.5, as_tuple=True)
        if len(rows) == 0:
            continue
        du = (cols.double() + 0.5 - uv[v, 0, 0]).abs().max()
        dv = (rows.double() + 0.5 - uv[v, 0, 1]).abs().max()
        half.append(float(max(du / K[v, 0, 0], dv / K[v, 1, 1]) * depth[v, 0].abs()))
    if not half:
        return 1.0
    return 1.1 * max(half)


@dataclass
class VisualHull:
    """Result of :func:`carve_visual_hull`."""

    points: np.ndarray  # [M, 3] float64 centres of the kept voxels
    voxel_size: float  # side of a voxel (world units)
    center: np.ndarray  # [3] look-at point the box is centred on
    min_votes: int  # views whose mask a kept voxel had to fall in
    coverage: float  # median over views of the fraction of mask cells the kept voxels project to


def carve_visual_hull(
    masks: np.ndarray | Tensor,  # [V, H, W]
    w2c: np.ndarray | Tensor,  # [V, 4, 4]
    K: np.ndarray | Tensor,  # [V, 3, 3]
    grid: int = 64,
    max_missed_views: int | None = None,
    min_coverage: float = 0.5,
) -> VisualHull:
    """Voxel carving of a `grid`³ box around the cameras' look-at point.

    A voxel votes for a view when its centre lies in front of the camera, inside the image and inside the
    mask (> 0.5). With an explicit `max_missed_views`, voxels with at least ``V - max_missed_views`` votes
    are kept. With ``None`` (default) the threshold starts at ``V - 1`` (``V`` when V < 4) and is relaxed
    one vote at a time, down to ``ceil(V / 2)``, until the kept voxels project onto at least
    `min_coverage` of the mask (median over views, measured on cells of ~1/32 of the image side):
    with noisy initial poses the strict intersection shrinks to a sliver (23 voxels out of 64³ on the
    DTU bench scene with its perturbed initial cameras), which would starve the views it misses.
    """
    masks_t = torch.as_tensor(np.asarray(masks), dtype=torch.float32)
    w2c_t = torch.as_tensor(np.asarray(w2c), dtype=torch.float64)
    K_t = torch.as_tensor(np.asarray(K), dtype=torch.float64)
    n_views, height, width = masks_t.shape
    center = look_at_point(w2c_t)
    half = _box_half_size(masks_t, w2c_t, K_t, center)
    axis = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid * 2.0 - 1.0  # voxel centres in (-1, 1)
    gx, gy, gz = torch.meshgrid(axis, axis, axis, indexing="ij")
    points = torch.stack([gx, gy, gz], -1).reshape(-1, 3) * half + center  # [G³, 3]

    cell = max(1, min(height, width) // 32)
    cells_w, cells_h = -(-width // cell), -(-height // cell)
    votes = torch.zeros(points.shape[0], dtype=torch.int32)
    cell_index = torch.full((n_views, points.shape[0]), -1, dtype=torch.long)  # [V, G³], -1 = off image
    mask_cells = []
    for v in range(n_views):
        uv, depth = project_points(points, w2c_t[v], K_t[v])  # [G³, 2], [G³]
        col = torch.floor(uv[:, 0]).long()
        row = torch.floor(uv[:, 1]).long()
        inside = (depth > 1e-6) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        hit = torch.zeros_like(inside)
        hit[inside] = masks_t[v, row[inside], col[inside]] > 0.5
        votes += hit.int()
        cell_index[v, inside] = (row[inside] // cell) * cells_w + col[inside] // cell
        padded = F.pad(masks_t[v], (0, cells_w * cell - width, 0, cells_h * cell - height))
        mask_cells.append(F.avg_pool2d(padded[None, None], cell)[0, 0].reshape(-1) > 0.5)  # [cells]

    def coverage(keep: Tensor) -> float:
        fractions = []
        for v in range(n_views):
            if not bool(mask_cells[v].any()):
                continue
            covered = torch.zeros_like(mask_cells[v])
            index = cell_index[v, keep]
            covered[index[index >= 0]] = True
            fractions.append(float((covered & mask_cells[v]).sum()) / float(mask_cells[v].sum()))
        return float(np.median(fractions)) if fractions else 0.0

    if max_missed_views is not None:
        thresholds = [n_views - max_missed_views]
    else:
        strict = n_views - (1 if n_views >= 4 else 0)
        thresholds = list(range(strict, min(strict, math.ceil(n_views / 2)) - 1, -1))
    for min_votes in thresholds:
        keep = votes >= min_votes
        covered = coverage(keep)
        if covered >= min_coverage:
            break
    return VisualHull(points[keep].numpy(), 2.0 * half / grid, center.numpy(), int(min_votes), covered)


def _mean_projected_color(
    points: Tensor,  # [P, 3] float64
    masks: Any,  # [V, H, W]
    images: Any,  # [V, H, W, 3]
    w2c: Any,  # [V, 4, 4]
    K: Any,  # [V, 3, 3]
) -> Tensor:
    """Mean RGB [P, 3] of the pixels `points` project to, over the views whose mask contains them (grey if none)."""
    masks_t = torch.as_tensor(np.asarray(masks), dtype=torch.float32)
    images_t = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    w2c_t = torch.as_tensor(np.asarray(w2c), dtype=torch.float64)
    K_t = torch.as_tensor(np.asarray(K), dtype=torch.float64)
    n_views, height, width = masks_t.shape
    color_sum = torch.zeros(points.shape[0], 3)
    count = torch.zeros(points.shape[0], 1)
    for v in range(n_views):
        uv, depth = project_points(points, w2c_t[v], K_t[v])
        col = torch.floor(uv[:, 0]).long()
        row = torch.floor(uv[:, 1]).long()
        inside = (depth > 1e-6) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        index = torch.nonzero(inside)[:, 0]
        in_mask = masks_t[v, row[index], col[index]] > 0.5
        index = index[in_mask]
        color_sum[index] += images_t[v, row[index], col[index]]
        count[index] += 1.0
    return torch.where(count > 0, color_sum / count.clamp_min(1.0), torch.full_like(color_sum, 0.5))
