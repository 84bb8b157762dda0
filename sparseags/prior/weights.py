"""Where the prior's weights live and whether they are complete (no downloads, ever).

Relative paths in the config (``prior.model_dir``, ``prior.ckpt_6dof``) are resolved against the
repository root, the folder that holds ``checkpoints/`` (see checkpoints/README.md).
"""

from __future__ import annotations

from pathlib import Path

from sparseags.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]

# Subfolders of a diffusers-format zero123-xl folder: (subfolder, config file, weight file patterns).
# clip_camera_projection/ is optional: the 6-DoF checkpoint replaces that layer entirely.
_SAFETENSORS_OR_BIN = ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin")
REQUIRED_PARTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("unet", "config.json", _SAFETENSORS_OR_BIN),
    ("vae", "config.json", _SAFETENSORS_OR_BIN),
    ("image_encoder", "config.json", ("model*.safetensors", "pytorch_model*.bin")),
    ("feature_extractor", "preprocessor_config.json", ()),
    ("scheduler", "scheduler_config.json", ()),
)
OPTIONAL_PARTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("clip_camera_projection", "config.json", _SAFETENSORS_OR_BIN),
)

HOW_TO_GET_MODEL = (
    "download the Hugging Face repo ashawkey/zero123-xl-diffusers into that folder (see checkpoints/README.md)"
)
HOW_TO_GET_CKPT = (
    "download zero123_6dof_23k.ckpt from the Google Drive link in the SparseAGS README "
    "and put it there (see checkpoints/README.md)"
)


class PriorWeightsError(UserError):
    """The Zero123 weights are missing, incomplete or do not match the expected layout (one line)."""


def resolve_weights_path(path: str | Path) -> Path:
    """An absolute path as given; a relative one under the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _part_problem(model_dir: Path, subfolder: str, config: str, patterns: tuple[str, ...]) -> str | None:
    folder = model_dir / subfolder
    if not (folder / config).is_file():
        return f"missing {subfolder}/{config}"
    if patterns and not any(any(folder.glob(pattern)) for pattern in patterns):
        return f"missing the weights in {subfolder}/ ({patterns[0]})"
    return None


def model_dir_problem(model_dir: str | Path) -> str | None:
    """None when `model_dir` is a complete zero123-xl-diffusers folder, else a one-line reason."""
    model_dir = resolve_weights_path(model_dir)
    if not model_dir.is_dir():
        return f"zero123-xl folder {model_dir} not found: {HOW_TO_GET_MODEL}"
    if not (model_dir / "model_index.json").is_file():
        return f"zero123-xl folder {model_dir} has no model_index.json: {HOW_TO_GET_MODEL}"
    for subfolder, config, patterns in REQUIRED_PARTS:
        problem = _part_problem(model_dir, subfolder, config, patterns)
        if problem is not None:
            return f"zero123-xl folder {model_dir} is incomplete ({problem}): {HOW_TO_GET_MODEL}"
    return None


def ckpt_problem(ckpt_6dof: str | Path) -> str | None:
    """None when the 6-DoF checkpoint file exists, else a one-line reason."""
    ckpt = resolve_weights_path(ckpt_6dof)
    if not ckpt.is_file():
        return f"6-DoF checkpoint {ckpt} not found: {HOW_TO_GET_CKPT}"
    return None


def weights_problem(model_dir: str | Path, ckpt_6dof: str | Path) -> str | None:
    """The first problem with the prior's weights, or None when both parts are in place."""
    return model_dir_problem(model_dir) or ckpt_problem(ckpt_6dof)


def check_weights(model_dir: str | Path, ckpt_6dof: str | Path) -> tuple[Path, Path]:
    """Resolved ``(model_dir, ckpt_6dof)``; raises :class:`PriorWeightsError` naming what is missing."""
    problem = weights_problem(model_dir, ckpt_6dof)
    if problem is not None:
        raise PriorWeightsError(problem)
    return resolve_weights_path(model_dir), resolve_weights_path(ckpt_6dof)
