"""``python main.py eval``: the headless pipeline over every scene of a dataset, on one machine or a Ray cluster.

For each scene under the data folder (any folder holding ``cameras_gt.json``, found recursively, sorted by its
path relative to the data folder) and each requested initial-pose preset, the pipeline runs exactly as
``python main.py run`` does, with all its artefacts in ``<out>/<preset>/<scene>/``. The preset ``"cameras"``
stands for the scene's own ``cameras.json`` (``--init`` not given). Then the driver writes, atomically:

* ``results.csv``: one row per scene x preset (:data:`RESULT_COLUMNS`); pose accuracies in % (0..100),
  PSNR in dB, SSIM and LPIPS in [0, 1], mesh F1@0.01 in %, pipeline time in seconds; a missing value
  (no novel views, no GT mesh, a failed run) is an empty cell;
* ``outliers.csv``: per scene x preset, the views whose *initial* rotation error against the GT exceeds
  :data:`TRUE_OUTLIER_DEG` (the true outliers), the views the leave-one-out test flagged, and TP / FP / FN;
* ``summary.md``: the paper's table (per preset, init vs final Rot@5, Rot@15, CC@0.1, then PSNR, LPIPS,
  F1 and time as means over the scenes), outlier precision / recall, and the failed runs with their errors;
* ``pose_accuracy.png``: per preset, init vs final Rot@5 / Rot@15 / CC@0.1 bars.

An evaluation resumes: a scene x preset whose run is complete (its ``run.json`` manifest names
``metrics.json`` with its hash, and that file parses) is not run again; an interrupted one continues
from its checkpoint (``<out>/<preset>/<scene>/.checkpoint/``) when the config is the same.
A run that fails with a :class:`~sparseags.errors.UserError` (a bad scene, a missing preset) is reported
as failed with its one-line message (in ``summary.md`` and ``<out>/<preset>/<scene>/error.txt``) and the
others go on; any other exception is a bug and stops the evaluation (finished runs are kept for resuming).

Without Ray the runs go side by side on this machine (``jobs``, :func:`plan_workers`): spawned worker
processes, each pinned to its share of the CPUs (torch and numba threads), report as they finish; with
``jobs=1`` they run one after another in this process. The results match up to the rounding that a different
thread count changes in torch's parallel sums.

With Ray (``ray_address`` not None) every scene x preset is one Ray task that calls
:func:`sparseags.headless.run_headless` in the worker with the same :class:`~sparseags.config.Config` the
sequential run would use, so the metrics are the same (the engine draws all randomness from ``cfg.seed``).
Each task asks for :data:`CPUS_PER_TASK_ENV` CPUs (default :data:`DEFAULT_CPUS_PER_TASK`) and, when the
config's device resolves to CUDA *on the driver* (``device: cuda``, or ``auto`` with a GPU visible to the
driver), one GPU.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from sparseags.atomic import atomic_write_bytes, atomic_write_text
from sparseags.config import Config
from sparseags.errors import UserError

__all__ = [
    "RESULT_COLUMNS",
    "OUTLIER_COLUMNS",
    "TRUE_OUTLIER_DEG",
    "CPUS_PER_TASK_ENV",
    "DEFAULT_CPUS_PER_TASK",
    "EvaluationError",
    "RayUnavailableError",
    "EvalJob",
    "JobResult",
    "find_scenes",
    "normalise_presets",
    "plan_jobs",
    "job_config",
    "load_finished_metrics",
    "run_job",
    "result_row",
    "outlier_row",
    "true_outliers",
    "write_reports",
    "check_ray_address",
    "cpus_per_task",
    "gpus_per_task",
    "summary_markdown",
    "pose_plot_png",
    "run_evaluation",
    "plan_workers",
    "WorkerPlan",
]

RESULT_COLUMNS = (
    "scene",
    "preset",
    "n_views",
    "init_rot5",
    "init_rot15",
    "init_cc10",
    "final_rot5",
    "final_rot15",
    "final_cc10",
    "outliers_flagged",
    "psnr",
    "ssim",
    "lpips",
    "f1",
    "time_s",
    # after test-time pose refinement of the novel cameras / a rigid ICP of the mesh
    # (sparseags/quality.py); empty when that refinement is off
    "psnr_refined",
    "ssim_refined",
    "lpips_refined",
    "f1_icp",
    # the final figures without the ambiguous views whose ground truth is symmetric (artifacts.gt_symmetry_verdict:
    # the truth is one of the poses that score alike); equal to final_* when there is none
    "final_rot5_x",
    "final_rot15_x",
    "final_cc10_x",
)
# ambiguous: searched views whose search was ambiguous (kept at their initial pose); corrected_locally: flagged
# views the pose solver placed in their own basin (a few degrees off: not searched); gt_symmetric: ambiguous
# views whose truth is one of the poses that score alike. tp/fp/fn count the leave-one-out flags as they are;
# tp_x/fp_x/fn_x count the final verdict: outliers = flagged minus corrected locally, and the ambiguous views
# of a symmetric ground truth are left out (neither a miss nor a false positive);
# searched: every searched view as id:error-before>error-after (degrees, rotation vs GT).
OUTLIER_COLUMNS = (
    "scene",
    "preset",
    "true_outliers",
    "flagged",
    "tp",
    "fp",
    "fn",
    "ambiguous",
    "tp_x",
    "fp_x",
    "fn_x",
    "searched",
    "corrected_locally",
    "gt_symmetric",
)

# A view is a true outlier when its initial rotation error (after the robust global alignment of
# sparseags.metrics.per_view_rotation_error_deg) exceeds this many degrees.
TRUE_OUTLIER_DEG = 30.0
# The preset name reported for the scene's own cameras.json.
CAMERAS_PRESET = "cameras"
# CPUs each Ray task asks for; an environment variable rather than a config key because it describes
# the cluster, not the method (it never changes a result).
CPUS_PER_TASK_ENV = "SPARSEAGS_EVAL_CPUS_PER_TASK"
DEFAULT_CPUS_PER_TASK = 1
# Object store of a local Ray instance: tasks exchange only configs and metrics dicts (kilobytes), and
# Ray's default (30 % of RAM) would crowd a small machine.
LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2

RESULTS_CSV = "results.csv"
OUTLIERS_CSV = "outliers.csv"
SUMMARY_MD = "summary.md"
POSE_PLOT_PNG = "pose_accuracy.png"


class EvaluationError(UserError):
    """A problem with the evaluation's inputs (no scenes found, a bad setting), in one line."""


class RayUnavailableError(EvaluationError):
    """Ray is not installed, or the requested cluster cannot be reached."""


# -------------------------------------------------------------------------------------------------
# planning


@dataclass(frozen=True)
class EvalJob:
    """One pipeline run: a scene with one initial-pose preset."""

    scene_dir: Path  # absolute scene folder
    scene: str  # its path relative to the data folder (POSIX), the name in every report
    preset: str  # init preset name; CAMERAS_PRESET = the scene's cameras.json
    out_dir: Path  # absolute <out>/<preset>/<scene>/

    @property
    def init(self) -> Optional[str]:
        """The value of ``cfg.scene.init`` for this job (None = cameras.json)."""
        return None if self.preset == CAMERAS_PRESET else self.preset

    @property
    def label(self) -> str:
        return f"{self.preset}/{self.scene}"


@dataclass
class JobResult:
    """What one job produced: ``status`` is "done" (ran now), "resumed" (metrics.json already there), "failed", or
    "interrupted" (a pool worker stopped by Ctrl-C / SIGTERM after its checkpoint; never reported)."""

    job: EvalJob
    status: str
    metrics: Optional[dict] = None
    error: str = ""
    wall_s: float = 0.0  # seconds the job took end to end (load + pipeline + export), 0 when resumed
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.metrics is not None


def find_scenes(data_dir: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """Every folder under `data_dir` (itself included) holding ``cameras_gt.json``, sorted by relative path.

    The search does not descend into a scene (its ``novel/`` also holds a ``cameras_gt.json``), into hidden
    folders (half-built scenes) or into the `exclude` folders (the evaluation's own output).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EvaluationError(f"{data_dir}: data folder not found")
    excluded = {Path(p).resolve() for p in exclude}
    scenes = []
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        here = Path(root)
        if "cameras_gt.json" in files:
            scenes.append(here)
            dirs.clear()
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and (here / d).resolve() not in excluded]
    return sorted(scenes, key=lambda p: p.relative_to(data_dir).as_posix())


def normalise_presets(presets: Optional[list[str]], cfg: Config) -> list[str]:
    """The preset names to evaluate, in order, without duplicates.

    None or an empty list means the config's ``scene.init`` (normally null, i.e. ``cameras.json``);
    ``"cameras"`` / ``"cameras.json"`` name the scene's own cameras.json; ``"x.json"`` is preset ``x``.
    """
    names = list(presets) if presets else [cfg.scene.init or CAMERAS_PRESET]
    result: list[str] = []
    for name in names:
        name = str(name).strip()
        if name in ("", CAMERAS_PRESET, "cameras.json"):
            name = CAMERAS_PRESET
        elif name.endswith(".json"):
            name = name[: -len(".json")]
        if "=" in name:
            raise EvaluationError(
                f"--init took {name!r} as a preset name; write the key=value overrides "
                "before --init (e.g. eval --data D recon.iters=300 --init dust3r_like)"
            )
        if "/" in name or "\\" in name or name.startswith("."):
            raise EvaluationError(f"init preset {name!r}: give a preset name (a file stem under <scene>/init/)")
        if name not in result:
            result.append(name)
    return result


def plan_jobs(data_dir: Path, out_dir: Path, presets: list[str]) -> list[EvalJob]:
    """One job per preset x scene (preset-major, scenes sorted), with absolute paths for remote workers."""
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir).resolve()
    scenes = find_scenes(data_dir, exclude=[out_dir])
    if not scenes:
        raise EvaluationError(f"{data_dir}: no scene folders (a folder with cameras_gt.json) found")
    jobs = []
    for preset in presets:
        for scene_dir in scenes:
            name = scene_dir.relative_to(data_dir).as_posix()
            if name == ".":
                name = scene_dir.name
            jobs.append(EvalJob(scene_dir=scene_dir, scene=name, preset=preset, out_dir=out_dir / preset / name))
    return jobs


def job_config(cfg: Config, job: EvalJob) -> Config:
    """The config of one job: a copy of `cfg` with ``scene.init`` set to the job's preset.

    Built on the driver and shipped as is, so a Ray task runs exactly what the sequential loop would.
    """
    job_cfg = copy.deepcopy(cfg)
    job_cfg.scene.init = job.init
    return job_cfg


# -------------------------------------------------------------------------------------------------
# running one job


def load_finished_metrics(out_dir: Path) -> Optional[dict]:
    """The metrics of a finished run in `out_dir`, or None when the run is incomplete (no valid ``run.json``
    naming ``metrics.json`` with its hash: an interrupted run, resumed from its checkpoint) or
    ``metrics.json`` is missing or unreadable."""
    from sparseags.run_folder import check_run

    path = Path(out_dir) / "metrics.json"
    if check_run(Path(out_dir), files=["metrics.json"]) is not None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "views" in data else None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__


def run_job(job: EvalJob, cfg: Config, progress: bool = False) -> JobResult:
    """Run the headless pipeline for one job (its config from :func:`job_config`); a UserError becomes a failed result.

    Also the body of the Ray task. On failure the one-line message is written to ``<out_dir>/error.txt``;
    on success an earlier ``error.txt`` is removed.
    """
    from sparseags.headless import run_headless

    start = time.perf_counter()
    error_path = job.out_dir / "error.txt"
    try:
        # an interrupted run continues from its checkpoint (<out_dir>/.checkpoint) when it is usable
        metrics = run_headless(
            job.scene_dir, job.out_dir, cfg, progress=progress, resume="auto", resume_hint=_eval_resume_hint()
        )
    except UserError as err:
        message = _one_line(err)
        _write_text_atomic(error_path, message + "\n")
        return JobResult(job, "failed", error=message, wall_s=time.perf_counter() - start)
    error_path.unlink(missing_ok=True)
    return JobResult(job, "done", metrics=metrics, wall_s=time.perf_counter() - start)


def _eval_resume_hint() -> str:
    """The command that resumes this evaluation (the same command line: finished runs are skipped and an
    interrupted one continues from its checkpoint)."""
    import shlex

    argv = list(sys.argv)
    if argv and argv[0].endswith("main.py"):
        return shlex.join(["python", *argv])
    return "the same eval command (finished runs are skipped, interrupted ones resume)"


def _progress_line(result: JobResult, index: int, total: int) -> str:
    head = f"[{index}/{total}] {result.job.label}:"
    if result.status == "resumed":
        return f"{head} already done (metrics.json), skipped"
    if result.status == "failed":
        return f"{head} FAILED after {result.wall_s:.1f} s: {result.error}"
    line = f"{head} done in {result.wall_s:.1f} s"
    pose = result.metrics.get("pose") if result.metrics else None
    if pose:
        line += (
            f" (Rot@15 {pose['init']['rot15']:.1f} -> {pose['final']['rot15']:.1f}, "
            f"CC@0.1 {pose['init']['cc10']:.1f} -> {pose['final']['cc10']:.1f})"
        )
    return line


# -------------------------------------------------------------------------------------------------
# sequential and Ray drivers


def _run_sequential(pending: list[tuple[EvalJob, Config]], report: Callable[[JobResult], None]) -> None:
    for job, job_cfg in pending:
        report(run_job(job, job_cfg))


@dataclass(frozen=True)
class WorkerPlan:
    """How a local evaluation spreads over this machine: `jobs` runs side by side, `threads` each."""

    jobs: int
    threads: int

    def describe(self) -> str:
        if self.jobs == 1:
            return f"1 job at a time, {self.threads} thread(s)"
        return f"{self.jobs} jobs side by side, {self.threads} thread(s) each"


def plan_workers(n_pending: int, cfg: Config, jobs: Optional[int] = None, cpus: Optional[int] = None) -> WorkerPlan:
    """Jobs side by side and threads per job for `n_pending` runs on this machine.

    jobs=None (``--jobs auto``): one job per CPU with one thread each. The engine's parallel parts (the
    rasteriser's tiles, torch's ops) keep two threads busy only part of the time, so separate jobs
    use the cores better than threads inside one job. A config that runs on CUDA gets one job at a
    time: the jobs would share one GPU. Never more jobs than runs, and at least one thread each.
    """
    cpus = cpus or _machine_cpus()
    if gpus_per_task(cfg):
        return WorkerPlan(1, cpus)
    wanted = cpus if jobs is None else jobs
    if wanted < 1:
        raise EvaluationError(f"--jobs {wanted}: expected a positive number of jobs side by side")
    side_by_side = max(1, min(wanted, n_pending))
    return WorkerPlan(side_by_side, max(1, cpus // side_by_side))


def _pin_threads(threads: int) -> None:
    """Start-up of a local worker process: torch and numba use `threads` threads."""
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


class _thread_env:
    """Environment for worker processes spawned inside the block: OpenMP and numba pools of `threads`."""

    NAMES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")

    def __init__(self, threads: int):
        self.threads = threads
        self.saved: dict[str, Optional[str]] = {}

    def __enter__(self) -> None:
        for name in self.NAMES:
            self.saved[name] = os.environ.get(name)
            os.environ[name] = str(self.threads)

    def __exit__(self, *exc) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_job_in_worker(job: EvalJob, cfg: Config) -> JobResult:
    """A pool worker's job: :func:`run_job`, with a stop by Ctrl-C / SIGTERM (the run wrote its checkpoint)
    returned as an "interrupted" result, since RunInterrupted itself does not cross the process boundary."""
    from sparseags.errors import RunInterrupted

    start = time.perf_counter()
    try:
        return run_job(job, cfg)
    except RunInterrupted as err:
        return JobResult(job, "interrupted", error=str(err), wall_s=time.perf_counter() - start)


def _crashed(job: EvalJob, err: BaseException, started: float) -> JobResult:
    """A job whose worker raised something other than a UserError, or died: failed, the others go on."""
    message = f"worker crashed: {_one_line(err)}"
    _write_text_atomic(job.out_dir / "error.txt", message + "\n")
    return JobResult(job, "failed", error=message, wall_s=time.perf_counter() - started)


def _run_local_pool(
    pending: list[tuple[EvalJob, Config]], plan: WorkerPlan, report: Callable[[JobResult], None]
) -> None:
    """`plan.jobs` worker processes (spawned, so no thread pool is inherited), each pinned to `plan.threads`.

    Results are reported as they finish. A worker that raises a bug or dies (out of memory) fails its
    job with the reason; the other jobs go on, and the finished ones stay for resuming. Ctrl-C (or a
    worker stopped by a signal) cancels the jobs not started, lets the running ones write their
    checkpoints, and ends the evaluation as :class:`~sparseags.errors.RunInterrupted` (exit 130); a job the
    pool had already queued may still run to its end first.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from sparseags.errors import RunInterrupted

    started = time.perf_counter()
    with _thread_env(plan.threads):
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            plan.jobs, mp_context=context, initializer=_pin_threads, initargs=(plan.threads,)
        ) as pool:
            futures = {pool.submit(_run_job_in_worker, job, job_cfg): job for job, job_cfg in pending}
            try:
                for future in as_completed(futures):
                    try:
                        result = future.result()
                    except Exception as err:  # a bug or a dead worker in one job must not lose the others
                        result = _crashed(futures[future], err, started)
                    if result.status == "interrupted":  # Ctrl-C / SIGTERM reached the workers
                        raise RunInterrupted(result.error or "interrupted", 130)
                    report(result)
            except (KeyboardInterrupt, RunInterrupted):
                for future in futures:
                    # Jobs not started stay pending. One the pool had already handed to a worker when the
                    # signal came runs to its end before the pool closes (its results are kept).
                    future.cancel()
                raise RunInterrupted(f"evaluation interrupted; resume with: {_eval_resume_hint()}", 130) from None


def cpus_per_task() -> float:
    """CPUs each Ray task requests: ``$SPARSEAGS_EVAL_CPUS_PER_TASK`` (default 1; fractions allowed)."""
    raw = os.environ.get(CPUS_PER_TASK_ENV, "").strip()
    if not raw:
        return float(DEFAULT_CPUS_PER_TASK)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise EvaluationError(f"{CPUS_PER_TASK_ENV}={raw!r}: expected a positive number of CPUs per task")
    return value


def gpus_per_task(cfg: Config) -> int:
    """1 when the config's device resolves to CUDA on the driver (``cuda*``, or ``auto`` with a visible GPU), else 0."""
    if cfg.device.startswith("cuda"):
        return 1
    if cfg.device == "auto":
        import torch

        return 1 if torch.cuda.is_available() else 0
    return 0


def _ray_task(job: EvalJob, cfg: Config, threads: int) -> JobResult:
    """Body of the Ray task: pin the thread pools to the CPUs Ray granted, then run the job."""
    _pin_threads(threads)
    return run_job(job, cfg)


def _machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _worker_pythonpath() -> str:
    """PYTHONPATH for the workers: the repository root first, so ``sparseags`` imports there as it does here."""
    repo_root = str(Path(__file__).resolve().parent.parent)
    existing = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != repo_root]
    return os.pathsep.join([repo_root, *existing])


def check_ray_address(address: str) -> str:
    """`address` if it can name a Ray cluster ("local", "auto", "ray://host:port" or "host:port"), else EvaluationError."""
    if address in ("local", "auto") or address.startswith("ray://") or ("=" not in address and ":" in address):
        return address
    if "=" in address:
        raise EvaluationError(
            f"--ray took {address!r} as its address; write the key=value overrides before "
            "--ray (or give the address: --ray local)"
        )
    raise EvaluationError(f"--ray {address!r}: expected 'local', 'auto', 'ray://host:port' or 'host:port'")


def _connect_ray(address: str):
    """Import Ray and connect (local instance for "local"); returns (ray module, whether we started it)."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError("--ray needs the 'ray' package: pip install 'ray>=2.9'") from None
    if ray.is_initialized():
        return ray, False
    runtime_env = {"env_vars": {"PYTHONPATH": _worker_pythonpath()}}
    try:
        if address == "local":
            ray.init(
                num_cpus=_machine_cpus(),
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                runtime_env=runtime_env,
                log_to_driver=True,
            )
        else:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError, OSError) as err:
        raise RayUnavailableError(f"cannot start or reach Ray at {address!r}: {_one_line(err)}") from None
    return ray, True


def _run_ray(
    pending: list[tuple[EvalJob, Config]], cfg: Config, address: str, report: Callable[[JobResult], None]
) -> None:
    """One Ray task per job; results are reported as they finish."""
    cpus = cpus_per_task()
    gpus = gpus_per_task(cfg)
    ray, started = _connect_ray(address)
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_ray_task)
        threads = max(1, int(cpus))
        waiting = {task.remote(job, job_cfg, threads): job for job, job_cfg in pending}
        while waiting:
            ready, _ = ray.wait(list(waiting), num_returns=1)
            for ref in ready:
                waiting.pop(ref)
                report(ray.get(ref))
    finally:
        if started:
            ray.shutdown()


def _record_locally(result: JobResult) -> None:
    """On a cluster without a shared disk the worker's metrics.json is not here; keep a copy for resuming."""
    if result.ok and load_finished_metrics(result.job.out_dir) is None:
        from sparseags.run_folder import MANIFEST, RUN_FORMAT, sha256_file

        path = _write_text_atomic(result.job.out_dir / "metrics.json", json.dumps(result.metrics, indent=2))
        # a manifest of the metrics alone, so that the run counts as finished here (its other files are on the worker)
        manifest = {
            "format": RUN_FORMAT,
            "run_id": "recorded-by-driver",
            "status": "complete",
            "note": "metrics recorded by the evaluation driver; the run's other files stayed on the worker",
            "files": {"metrics.json": {"sha256": sha256_file(path), "bytes": path.stat().st_size}},
        }
        _write_text_atomic(result.job.out_dir / MANIFEST, json.dumps(manifest, indent=2))


# -------------------------------------------------------------------------------------------------
# reports


def _number(value: Any) -> str:
    """A CSV cell: repr precision for numbers (exact round trip), empty for missing or non-finite values."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return str(value)
    value = float(value)
    return repr(value) if math.isfinite(value) else ""


def result_row(result: JobResult) -> dict[str, str]:
    """The results.csv row of one job (all metric cells empty for a failed job)."""
    row = {name: "" for name in RESULT_COLUMNS}
    row["scene"], row["preset"] = result.job.scene, result.job.preset
    metrics = result.metrics
    if metrics is None:
        return row
    row["n_views"] = _number(len(metrics.get("views", {})))
    pose = metrics.get("pose") or {}
    for stage in ("init", "final"):
        for key in ("rot5", "rot15", "cc10"):
            row[f"{stage}_{key}"] = _number(pose.get(stage, {}).get(key))
    for key in ("rot5", "rot15", "cc10"):
        row[f"final_{key}_x"] = _number((pose.get("final_x") or pose.get("final", {})).get(key))
    if "outliers" in metrics:
        row["outliers_flagged"] = _number(len(metrics["outliers"].get("flagged", [])))
    novel = metrics.get("novel") or {}
    refined = novel.get("pose_refined") or {}
    for key in ("psnr", "ssim", "lpips"):
        row[key] = _number(novel.get(key))
        row[f"{key}_refined"] = _number(refined.get(key))
    mesh = metrics.get("mesh") or {}
    row["f1"] = _number(mesh.get("f1_0.01"))
    row["f1_icp"] = _number((mesh.get("icp") or {}).get("f1_0.01"))
    row["time_s"] = _number(metrics.get("time_s"))
    return row


def _init_camera_file(scene_dir: Path, preset: str) -> Path:
    return scene_dir / "cameras.json" if preset == CAMERAS_PRESET else scene_dir / "init" / f"{preset}.json"


def true_outliers(scene_dir: Path, preset: str, threshold_deg: float = TRUE_OUTLIER_DEG) -> list[str]:
    """Ids of the views whose initial pose (cameras.json or init/<preset>.json) is more than `threshold_deg`
    off the ground truth, by :func:`sparseags.metrics.per_view_rotation_error_deg`. Raises SceneError."""
    import numpy as np

    from sparseags.metrics import per_view_rotation_error_deg
    from sparseags.scene import SceneError, read_cameras_json

    init_path = _init_camera_file(scene_dir, preset)
    init = read_cameras_json(init_path)
    gt_path = scene_dir / "cameras_gt.json"
    gt = read_cameras_json(gt_path)
    ids = list(init)
    missing = [i for i in ids if i not in gt]
    if missing:
        raise SceneError(f"views {missing} of {init_path.name} have no ground truth", gt_path)
    errors = per_view_rotation_error_deg(np.stack([init[i].w2c for i in ids]), np.stack([gt[i].w2c for i in ids]))
    return [view_id for view_id, err in zip(ids, errors.tolist()) if err > threshold_deg]


def outlier_row(result: JobResult) -> dict[str, str]:
    """The outliers.csv row of one job (id lists space-separated; counts empty when unknown)."""
    row = {name: "" for name in OUTLIER_COLUMNS}
    row["scene"], row["preset"] = result.job.scene, result.job.preset
    truth = result.extra.get("true_outliers")
    flagged = None if result.metrics is None else list(result.metrics.get("outliers", {}).get("flagged", []))
    if truth is not None:
        row["true_outliers"] = " ".join(truth)
    if flagged is not None:
        row["flagged"] = " ".join(flagged)
    if truth is not None and flagged is not None:
        row["tp"] = str(len(set(truth) & set(flagged)))
        row["fp"] = str(len(set(flagged) - set(truth)))
        row["fn"] = str(len(set(truth) - set(flagged)))
        report = result.metrics.get("outliers", {})
        ambiguous = set(report.get("ambiguous", {}))
        local = set(report.get("corrected_locally", {}))
        symmetric = set(report.get("gt_symmetric", {}))
        row["ambiguous"] = " ".join(sorted(ambiguous))
        row["corrected_locally"] = " ".join(sorted(local))
        row["gt_symmetric"] = " ".join(sorted(symmetric))
        truth_x, flagged_x = set(truth) - symmetric, set(flagged) - local - symmetric
        row["tp_x"] = str(len(truth_x & flagged_x))
        row["fp_x"] = str(len(flagged_x - truth_x))
        row["fn_x"] = str(len(truth_x - flagged_x))
        row["searched"] = " ".join(
            f"{view}:{e.get('rot_err_before_deg', float('nan')):.1f}>{e.get('rot_err_after_deg', float('nan')):.1f}"
            for view, e in report.get("views", {}).items()
        )
    return row


def _csv_text(columns: tuple[str, ...], rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _mean(values: Iterable[str]) -> Optional[float]:
    numbers = [float(v) for v in values if v != ""]
    return sum(numbers) / len(numbers) if numbers else None


def _cell(value: Optional[float], digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pose_table(presets: list[str], rows: list[dict[str, str]]) -> list[str]:
    lines = [
        "| initial poses | scenes | Rot@5 ↑ | Rot@15 ↑ | CC@0.1 ↑ | PSNR ↑ | LPIPS ↓ | F1 ↑ | time (s) "
        "| PSNR* ↑ | LPIPS* ↓ | F1* ↑ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for preset in presets:
        mine = [r for r in rows if r["preset"] == preset]
        ok = [r for r in mine if r["time_s"] != ""]
        count = f"{len(ok)}/{len(mine)}"
        init = [_cell(_mean(r[f"init_{k}"] for r in ok), 1) for k in ("rot5", "rot15", "cc10")]
        final = [_cell(_mean(r[f"final_{k}"] for r in ok), 1) for k in ("rot5", "rot15", "cc10")]
        quality = [
            _cell(_mean(r["psnr"] for r in ok), 2),
            _cell(_mean(r["lpips"] for r in ok), 3),
            _cell(_mean(r["f1"] for r in ok), 1),
            _cell(_mean(r["time_s"] for r in ok), 0),
            _cell(_mean(r["psnr_refined"] for r in ok), 2),
            _cell(_mean(r["lpips_refined"] for r in ok), 3),
            _cell(_mean(r["f1_icp"] for r in ok), 1),
        ]
        lines.append(f"| {preset} | {count} | " + " | ".join(init) + " | – | – | – | – | – | – | – |")
        lines.append(f"| {preset} + SparseAGS | {count} | " + " | ".join(final + quality) + " |")
        final_x = [_cell(_mean(r.get(f"final_{k}_x", "") for r in ok), 1) for k in ("rot5", "rot15", "cc10")]
        if final_x != final:
            lines.append(
                f"| {preset} + SparseAGS, symmetric ambiguous views out | {count} | "
                + " | ".join(final_x)
                + " | – | – | – | – | – | – | – |"
            )
    return lines


def _outlier_table(presets: list[str], rows: list[dict[str, str]]) -> list[str]:
    def precision_recall(selected: list[dict[str, str]], suffix: str = "") -> tuple[int, int, int, str, str]:
        counted = [r for r in selected if r["tp" + suffix] != ""]
        tp, fp, fn = (sum(int(r[k + suffix]) for r in counted) for k in ("tp", "fp", "fn"))
        precision = f"{100.0 * tp / (tp + fp):.1f}" if tp + fp else "–"
        recall = f"{100.0 * tp / (tp + fn):.1f}" if tp + fn else "–"
        return tp, fp, fn, precision, recall

    lines = [
        "| initial poses | true outliers | flagged | TP | FP | FN | precision (%) | recall (%) | ambiguous | "
        "final verdict: precision / recall (%) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, selected in [(p, [r for r in rows if r["preset"] == p]) for p in presets] + [("all", rows)]:
        tp, fp, fn, precision, recall = precision_recall(selected)
        ambiguous = sum(len(r.get("ambiguous", "").split()) for r in selected)
        _, _, _, precision_x, recall_x = precision_recall(selected, "_x")
        lines.append(
            f"| {name} | {tp + fn} | {tp + fp} | {tp} | {fp} | {fn} | {precision} | {recall} | {ambiguous} | "
            f"{precision_x} / {recall_x} |"
        )
    return lines


def _time_section(results: list[JobResult], timing: Optional[dict]) -> list[str]:
    """summary.md's time section: this invocation's wall time and every run's own time, slowest first."""
    timed = [(r.metrics.get("time_s"), r) for r in results if r.ok and r.metrics]
    timed = sorted(((float(t), r) for t, r in timed if isinstance(t, (int, float))), key=lambda x: -x[0])
    lines = ["## Time", ""]
    if timing is not None:
        lines.append(
            f"This invocation: {timing['wall_s']:.0f} s wall for {timing['ran']} run(s) ({timing['how']}); "
            f"{len(results) - timing['ran']} run(s) were already finished."
        )
    if timed:
        total = sum(t for t, _ in timed)
        lines.append(f"Sum of the runs' pipeline times: {total:.0f} s over {len(timed)} run(s).")
        lines += ["", "| preset | scene | pipeline s |", "|---|---|---|"]
        lines += [f"| {r.job.preset} | {r.job.scene} | {t:.0f} |" for t, r in timed]
    return lines + [""]


def summary_markdown(
    results: list[JobResult], presets: list[str], cfg: Config, data_dir: Path, timing: Optional[dict] = None
) -> str:
    """summary.md: the paper-style table, outlier precision / recall, time, and the failed runs."""
    rows = [result_row(r) for r in results]
    outlier_rows = [outlier_row(r) for r in results]
    failed = [r for r in results if not r.ok]
    lines = [
        "# Evaluation summary",
        "",
        f"Data: `{data_dir}`; {len({r.job.scene for r in results})} scene(s) x {len(presets)} preset(s); "
        f"seed {cfg.seed}, device `{cfg.device}`, recon.iters {cfg.recon.iters}, "
        f"pipeline.outliers {str(cfg.pipeline.outliers).lower()}.",
        "",
        "## Pose accuracy and reconstruction quality",
        "",
        "Means over the scenes that finished (`scenes` = finished/total). Each preset's first row is its initial",
        "poses, the second the poses after SparseAGS. Rot@θ: % of ordered view pairs with relative rotation error",
        "< θ°; CC@0.1: % of cameras whose centre is within 0.1 x scene scale after a similarity alignment.",
        "PSNR / LPIPS: held-out novel views (scenes with `novel/`); F1: mesh F1@0.01 in % (scenes with `mesh.ply`);",
        "time: pipeline seconds per scene. Starred: PSNR / LPIPS after a test-time pose refinement of each novel",
        f"camera ({cfg.metrics.novel_pose_steps} steps, scene frozen) and F1 after a rigid ICP onto the GT mesh",
        "(sparseags/quality.py): the unstarred numbers also measure the residual misregistration of the frame.",
        "– = not available.",
        "",
        *_pose_table(presets, rows),
        "",
        "## Outlier detection",
        "",
        f"True outliers: views whose initial rotation error exceeds {TRUE_OUTLIER_DEG:g}° (after a robust global",
        "alignment); flagged: views the leave-one-out test removed. Precision = TP / flagged, recall = TP / true.",
        "Final verdict: the flagged views the pose solver placed in their own basin (a few degrees off, corrected",
        "without a search) are not outliers, and ambiguous views whose truth is one of the poses that score alike",
        "(a symmetric object) are left out of both counts and of the 'symmetric ambiguous views out' pose row.",
    ]
    if not cfg.pipeline.outliers:
        lines.append("Outlier detection was off (`pipeline.outliers=false`), so nothing was flagged.")
    lines += ["", *_outlier_table(presets, outlier_rows), ""]
    lines += _time_section(results, timing)
    lines += ["## Failed runs", ""]
    if failed:
        lines += ["| preset | scene | error |", "|---|---|---|"]
        lines += [f"| {r.job.preset} | {r.job.scene} | {r.error.replace('|', '/')} |" for r in failed]
    else:
        lines.append("None.")
    lines.append("")
    return "\n".join(lines)


def pose_plot_png(rows: list[dict[str, str]], presets: list[str]) -> bytes:
    """PNG bytes of the init vs final Rot@5 / Rot@15 / CC@0.1 bars, one panel per preset (means in %)."""
    import numpy as np
    from matplotlib.figure import Figure

    metrics = (("rot5", "Rot@5"), ("rot15", "Rot@15"), ("cc10", "CC@0.1"))
    fig = Figure(figsize=(3.2 * len(presets) + 0.8, 3.4), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(presets), sharey=True, squeeze=False)[0]
    x = np.arange(len(metrics))
    width = 0.38
    for ax, preset in zip(axes, presets):
        ok = [r for r in rows if r["preset"] == preset and r["time_s"] != ""]
        for offset, stage, colour in ((-width / 2, "init", "#9e9e9e"), (width / 2, "final", "#1f77b4")):
            means = [_mean(r[f"{stage}_{key}"] for r in ok) for key, _ in metrics]
            heights = [0.0 if m is None else m for m in means]
            bars = ax.bar(x + offset, heights, width, label=stage, color=colour)
            ax.bar_label(bars, labels=[_cell(m, 0) for m in means], fontsize=7, padding=1)
        ax.set_xticks(x, [label for _, label in metrics])
        ax.set_title(f"{preset} ({len(ok)} scenes)", fontsize=9)
        ax.set_ylim(0, 110)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("% (mean over scenes)")
    axes[0].legend(fontsize=8, loc="upper left")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _write_text_atomic(path: Path, text: str) -> Path:
    return atomic_write_text(path, text)


def write_reports(
    out_dir: Path,
    results: list[JobResult],
    presets: list[str],
    cfg: Config,
    data_dir: Path,
    timing: Optional[dict] = None,
) -> list[Path]:
    """results.csv, outliers.csv, summary.md and pose_accuracy.png into `out_dir` (each atomic).

    timing: this invocation's wall time (``wall_s``), how many runs it ran (``ran``) and how (``how``).
    """
    out_dir = Path(out_dir)
    rows = [result_row(r) for r in results]
    return [
        _write_text_atomic(out_dir / RESULTS_CSV, _csv_text(RESULT_COLUMNS, rows)),
        _write_text_atomic(out_dir / OUTLIERS_CSV, _csv_text(OUTLIER_COLUMNS, [outlier_row(r) for r in results])),
        _write_text_atomic(out_dir / SUMMARY_MD, summary_markdown(results, presets, cfg, data_dir, timing)),
        atomic_write_bytes(out_dir / POSE_PLOT_PNG, pose_plot_png(rows, presets)),
    ]


# -------------------------------------------------------------------------------------------------
# entry point


def _attach_truth(result: JobResult) -> JobResult:
    """Add the job's true outliers (from its camera files) to the result; unknown when they cannot be read."""
    from sparseags.metrics import MetricError

    try:
        result.extra["true_outliers"] = true_outliers(result.job.scene_dir, result.job.preset)
    except (UserError, MetricError):
        result.extra["true_outliers"] = None
    return result


def _rescore(finished: dict, cfg: Config, log: Callable[[str], None]) -> int:
    """Recompute the novel-view and mesh metrics of resumed runs from their files (in this process).

    Returns how many runs could not be re-scored (they keep their old metrics).
    """
    from sparseags.artifacts import RescoreError, rescore_run
    from sparseags.config import resolve_device
    from sparseags.run_folder import refresh_manifest
    from sparseags.scene import load_scene
    from sparseags.session import load_lpips_for

    resumed = [job for job, result in finished.items() if result.status == "resumed"]
    if not resumed:
        return 0
    device = resolve_device(cfg)
    lpips_metric = load_lpips_for(cfg, device)
    failures = 0
    for index, job in enumerate(resumed, 1):
        head = f"[re-score {index}/{len(resumed)}] {job.label}:"
        start = time.perf_counter()
        try:
            scene = load_scene(job.scene_dir, resolution=cfg.scene.resolution, init=job.init)
            metrics = rescore_run(job.out_dir, scene, cfg, lpips_metric, device=device)
            refresh_manifest(job.out_dir, ["metrics.json"])  # run.json records the rewritten metrics
        except (RescoreError, UserError) as err:
            log(f"{head} FAILED, kept the old metrics: {_one_line(err)}")
            failures += 1
            continue
        finished[job] = JobResult(job, "resumed", metrics=metrics)
        novel = metrics.get("novel") or {}
        refined = novel.get("pose_refined") or {}
        log(
            f"{head} {time.perf_counter() - start:.1f} s, novel PSNR {_cell(novel.get('psnr'), 2)} "
            f"(pose-refined {_cell(refined.get('psnr'), 2)}), F1 {_cell((metrics.get('mesh') or {}).get('f1_0.01'), 1)}"
        )
        sys.stdout.flush()
    return failures


def run_evaluation(
    data_dir: Path,
    out_dir: Path,
    cfg: Config,
    presets: Optional[list[str]] = None,
    ray_address: Optional[str] = None,
    log: Callable[[str], None] = print,
    rescore: bool = False,
    jobs: Optional[int] = 1,
) -> int:
    """Evaluate every scene under `data_dir` for each preset; returns 0 when every run succeeded, else 1.

    ray_address: None = sequential in this process; "local" = a Ray instance on this machine
    (or the one already initialised); "ray://host:port" = a Ray cluster (every worker needs this repository
    and the scenes at the same absolute paths).
    rescore: recompute the novel-view and mesh metrics of already finished runs from their saved files
    with the current metric code and ``cfg.metrics`` (poses, outliers and times are kept), here, in sequence.
    jobs: runs side by side on this machine without Ray (:func:`plan_workers`; None = one per CPU, each
    pinned to its share of the threads). 1 runs them one after another in this process.
    """
    names = normalise_presets(presets, cfg)
    if ray_address is not None:
        check_ray_address(ray_address)
    plan_list = plan_jobs(Path(data_dir), Path(out_dir), names)
    out_dir = Path(out_dir).resolve()
    start = time.perf_counter()
    log(
        f"evaluating {len({j.scene for j in plan_list})} scene(s) x {len(names)} preset(s) "
        f"({', '.join(names)}) into {out_dir}" + (f" with Ray ({ray_address})" if ray_address else "")
    )

    finished: dict[EvalJob, JobResult] = {}
    pending: list[tuple[EvalJob, Config]] = []
    for job in plan_list:
        metrics = load_finished_metrics(job.out_dir)
        if metrics is not None:
            finished[job] = JobResult(job, "resumed", metrics=metrics)
            log(_progress_line(finished[job], len(finished), len(plan_list)))
        else:
            pending.append((job, job_config(cfg, job)))

    rescore_failures = _rescore(finished, cfg, log) if rescore else 0

    def report(result: JobResult) -> None:
        finished[result.job] = result
        _record_locally(result)
        log(_progress_line(result, len(finished), len(plan_list)))
        sys.stdout.flush()

    how = f"Ray ({ray_address})"
    if pending and ray_address:
        _run_ray(pending, cfg, ray_address, report)
    elif pending:
        plan = plan_workers(len(pending), cfg, jobs)
        how = plan.describe()
        log(f"running {len(pending)} job(s): {how}")
        if plan.jobs == 1:
            _run_sequential(pending, report)
        else:
            _run_local_pool(pending, plan, report)

    results = [_attach_truth(finished[job]) for job in plan_list]
    wall_s = time.perf_counter() - start
    timing = {"wall_s": wall_s, "ran": len(pending), "how": how if pending else "nothing to run"}
    written = write_reports(out_dir, results, names, cfg, Path(data_dir).resolve(), timing=timing)
    failed = sum(not r.ok for r in results)
    log(
        f"evaluation finished in {wall_s:.1f} s: {len(results) - failed} ok, {failed} failed; "
        f"{', '.join(p.name for p in written)} in {out_dir}"
    )
    if rescore_failures:
        log(f"{rescore_failures} finished run(s) could not be re-scored (see the FAILED lines above)")
    return 1 if failed or rescore_failures else 0


# -------------------------------------------------------------------------------------------------
# reading an evaluation folder back (the debugger's evaluation table)


@dataclass(frozen=True)
class EvalRun:
    """One scene x preset of an evaluation folder, as the debugger's table shows it.

    status: "complete" (run.json and metrics.json check out), "interrupted" (a checkpoint, no run.json),
    "failed" (error.txt) or "incomplete" (neither). ``metrics`` maps "init_rot5" ... "final_cc10", "psnr" and
    "time_s" to numbers (NaN when unknown); ``worse`` is true when a final pose accuracy is below its start.
    """

    scene: str
    preset: str
    folder: Path
    status: str
    metrics: dict
    worse: bool
    message: str = ""

    @property
    def name(self) -> str:
        return f"{self.scene}/{self.preset}"


EVAL_TABLE_KEYS = ("init_rot5", "final_rot5", "init_rot15", "final_rot15", "init_cc10", "final_cc10", "psnr", "time_s")


def _run_numbers(metrics: Optional[dict]) -> dict:
    numbers = {key: float("nan") for key in EVAL_TABLE_KEYS}
    if not metrics:
        return numbers
    pose = metrics.get("pose") or {}
    for stage in ("init", "final"):
        for key in ("rot5", "rot15", "cc10"):
            value = (pose.get(stage) or {}).get(key)
            numbers[f"{stage}_{key}"] = float(value) if value is not None else float("nan")
    novel = metrics.get("novel") or {}
    numbers["psnr"] = float(novel.get("psnr", float("nan")))
    numbers["time_s"] = float(metrics.get("time_s", float("nan")))
    return numbers


def read_evaluation(eval_dir: Path) -> list[EvalRun]:
    """Every run of an evaluation folder (``<eval>/<preset>/<scene>/``), sorted by scene then preset.

    A run is any folder there with ``run.json``, a checkpoint or ``error.txt``; nothing is written. An
    EvaluationError when the folder holds no run.
    """
    from sparseags.run_state import checkpoint_path

    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise EvaluationError(f"{eval_dir}: no such folder")
    runs = []
    for preset_dir in sorted(p for p in eval_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for folder in sorted(preset_dir.rglob("*")):
            if not folder.is_dir() or any(part.startswith(".") for part in folder.relative_to(eval_dir).parts):
                continue
            has_run = (folder / "run.json").is_file()
            has_ckpt = checkpoint_path(folder).is_file()
            has_error = (folder / "error.txt").is_file()
            if not (has_run or has_ckpt or has_error):
                continue
            metrics = load_finished_metrics(folder) if has_run else None
            if metrics is not None:
                status, message = "complete", ""
            elif has_ckpt:
                status, message = "interrupted", "no run.json; a checkpoint"
            elif has_error:
                status = "failed"
                message = (folder / "error.txt").read_text(encoding="utf-8", errors="replace").strip()
            else:
                status, message = "incomplete", "run.json does not check out"
            numbers = _run_numbers(metrics)
            worse = any(
                numbers[f"final_{k}"] < numbers[f"init_{k}"] - 1e-9
                for k in ("rot5", "rot15", "cc10")
                if math.isfinite(numbers[f"final_{k}"]) and math.isfinite(numbers[f"init_{k}"])
            )
            scene = folder.relative_to(preset_dir).as_posix()
            runs.append(EvalRun(scene, preset_dir.name, folder, status, numbers, worse, message))
    if not runs:
        raise EvaluationError(f"{eval_dir}: no runs of an evaluation here (expected <preset>/<scene>/run.json)")
    return sorted(runs, key=lambda r: (r.scene, r.preset))
