"""``python main.py run``: the pipeline without a window, with a progress bar and every artefact on disk.

Writes into the output folder: ``config.yaml`` (resolved, with the seed), ``gaussians.ply``,
``cameras_updated.json`` (+ ``colmap/`` and ``transforms.json``), ``mesh.glb``, ``turntable.mp4``,
``overlay.png``, ``lpips_bars.png``, ``search_<id>.png`` per searched outlier, ``decisions.json`` (the
manual decisions, replayable with ``--decisions``) and ``metrics.json``.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sparseags.atomic import OutputError
from sparseags.config import Config, read_yaml, save_config
from sparseags.errors import UserError
from sparseags.session import build_pipeline


class DecisionFileError(UserError):
    """A --decisions file that cannot be read."""


def load_decisions(path: str | Path) -> list[dict]:
    """Read a decision log: a JSON/YAML list of entries, or an object with a "decisions" list."""
    data = read_yaml(path, DecisionFileError, "decision file")
    if isinstance(data, dict):
        data = data.get("decisions")
    if not isinstance(data, list) or not all(isinstance(e, dict) and "action" in e for e in data):
        raise DecisionFileError(f"{path}: expected a list of decisions, each with an 'action'")
    return data


def _progress_bar(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=None, unit="step", dynamic_ncols=True, file=sys.stderr)


def run_pipeline(
    pipeline: Any, progress: bool = True, budget: int = 5, after_step: Optional[Callable[[], None]] = None
) -> float:
    """Step the pipeline to the end; returns the elapsed seconds. `after_step` runs after every step
    (the headless run's checkpoints and signal checks)."""
    start = time.perf_counter()
    bar = _progress_bar(progress)
    last_loss = float("nan")
    try:
        while not pipeline.done:
            event = pipeline.step(budget)
            if "loss" in event:
                last_loss = event["loss"]
            if bar is not None:
                recon = pipeline.recon
                bar.set_description(pipeline.phase_label(), refresh=False)
                bar.set_postfix(
                    step=f"{recon.step_count}/{recon.iters}" if recon is not None else "-",
                    loss=f"{last_loss:.4g}",
                    gaussians=recon.gaussians.num_gaussians if recon else 0,
                    elapsed=f"{time.perf_counter() - start:.0f}s",
                    refresh=False,
                )
                bar.update(1)
            if after_step is not None:
                after_step()
    finally:
        if bar is not None:
            bar.close()
    return time.perf_counter() - start


class Checkpointer:
    """Checkpoints of a headless run: at every phase boundary and every ``run.checkpoint_every_s`` seconds
    (0 = after every step), and when a signal asks the run to stop (then it raises RunInterrupted)."""

    def __init__(
        self,
        pipeline: Any,
        path: Path,
        scene_dir: Path,
        run_id: str,
        elapsed_before: float,
        decision_entries: list,
        guard: Any = None,
    ):
        self.pipeline = pipeline
        self.path = Path(path)
        self.scene_dir = scene_dir
        self.run_id = run_id
        self.elapsed_before = float(elapsed_before)
        self.decision_entries = decision_entries
        self.guard = guard
        self.enabled = bool(pipeline.cfg.run.checkpoints)
        self.every_s = float(pipeline.cfg.run.checkpoint_every_s)
        self.started = time.perf_counter()
        self.last_time = time.perf_counter()
        self.last_phase = pipeline.phase
        self.count = 0
        self.seconds = 0.0
        self.max_bytes = 0

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def save(self) -> None:
        if not self.enabled:
            return
        from sparseags.run_state import save_run_checkpoint

        t0 = time.perf_counter()
        save_run_checkpoint(
            self.path,
            self.pipeline,
            scene_dir=self.scene_dir,
            run_id=self.run_id,
            elapsed_s=self.elapsed(),
            decision_entries=self.decision_entries,
        )
        self.count += 1
        self.seconds += time.perf_counter() - t0
        self.max_bytes = max(self.max_bytes, self.path.stat().st_size)
        self.last_time = time.perf_counter()
        self.last_phase = self.pipeline.phase

    def __call__(self) -> None:
        stop = self.guard is not None and self.guard.received is not None
        if stop or self.pipeline.phase != self.last_phase or time.perf_counter() - self.last_time >= self.every_s:
            self.save()
        if stop:
            raise self.guard.interrupted()


def interrupted_line(pipeline: Any, resume_hint: str, saved: bool) -> str:
    where = f"interrupted in {pipeline.phase_label()} at step {pipeline.total_steps}"
    if not saved:
        return f"{where}; checkpoints are off (run.checkpoints=false), nothing to resume"
    return f"{where}; resume with: {resume_hint}"


def default_resume_command(out: Path) -> str:
    """The command line of this process with --resume added (``main.py run``), or the same command (eval)."""
    import shlex

    argv = list(sys.argv)
    if argv and argv[0].endswith("main.py"):
        if "run" in argv[1:2] and "--resume" not in argv:
            argv.append("--resume")
        return shlex.join(["python", *argv])
    return f"python main.py run --out {shlex.quote(str(out))} --resume (with the same scene and config)"


def run_headless(
    scene_dir: Path,
    out: Path,
    cfg: Config,
    decisions: Optional[str] = None,
    progress: bool = True,
    resume: bool | str = False,
    resume_hint: Optional[str] = None,
) -> dict:
    """Load, run and export; returns the metrics dict.

    resume: False = start from scratch; True = continue from ``<out>/.checkpoint/state.pt`` (a missing,
    refused or incompatible checkpoint is a CheckpointError); "auto" = continue from it when it is usable,
    else start from scratch with a notice (the evaluation's behaviour).
    The artefacts are staged in ``<out>/.staging-<run id>/`` and published with ``run.json`` last
    (sparseags/run_state.py); SIGINT / SIGTERM checkpoint and raise RunInterrupted.
    """
    from sparseags import run_folder, run_state

    out = Path(out)
    entries = load_decisions(decisions) if decisions else []  # check the inputs before any heavy work
    ckpt = run_state.checkpoint_path(out)
    payload = None
    if resume:
        try:
            payload = run_state.read_run_checkpoint(ckpt)
        except run_state.CheckpointError as err:
            if resume != "auto":
                if not ckpt.is_file():
                    done = run_folder.read_manifest(out) is not None
                    raise run_state.CheckpointError(
                        f"{out}: nothing to resume: "
                        + (
                            "it holds a complete run (run.json) and no checkpoint"
                            if done
                            else f"no checkpoint ({ckpt})"
                        )
                    ) from None
                raise
            if ckpt.exists():
                print(f"notice: not resuming: {err}; starting from scratch", file=sys.stderr)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder ({err.strerror or err})") from None
    run_id = payload["run_id"] if payload else run_state.new_run_id()
    run_folder.prepare_output_folder(out, keep=run_folder.staging_dir(out, run_id).name)
    pipeline = build_pipeline(scene_dir, cfg, match_cache=out / "matches.npz")  # matches cached in the run folder
    if payload is not None:
        try:
            run_state.check_compatible(payload, ckpt, pipeline.scene, cfg, entries)
        except run_state.CheckpointError as err:
            if resume != "auto":
                raise
            print(f"notice: not resuming: {err}; starting from scratch", file=sys.stderr)
            payload, run_id = None, run_state.new_run_id()
    if payload is not None:
        try:
            pipeline.load_state_dict(payload["pipeline"])
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            raise run_state.CheckpointError(
                f"{ckpt}: the checkpoint's pipeline state cannot be restored "
                f"({type(err).__name__}: {run_state.one_line(err)})"
            ) from None
        entries = list(payload.get("decision_entries") or [])
        print(f"resuming {pipeline.phase_label()} at step {pipeline.total_steps} from {ckpt}", file=sys.stderr)
    elif entries:
        pipeline.queue_decisions(entries)

    staging = run_folder.staging_dir(out, run_id)
    hint = resume_hint or default_resume_command(out)
    try:
        save_config(cfg, staging / "config.yaml")
        checkpointer = Checkpointer(
            pipeline,
            ckpt,
            run_folder.relative_scene_dir(scene_dir, out),
            run_id,
            float(payload["elapsed_s"]) if payload else 0.0,
            entries,
        )
        with run_state.SignalGuard(lambda: interrupted_line(pipeline, hint, checkpointer.enabled)) as guard:
            checkpointer.guard = guard
            if payload is None:
                checkpointer.save()  # the start: also shows early that the folder is writable
            run_pipeline(pipeline, progress=progress, after_step=checkpointer)
            if checkpointer.last_phase != pipeline.phase:
                checkpointer.save()  # done: an interruption while writing the outputs resumes here
            guard.deferred = False  # from here a signal stops at once; the checkpoint is on disk
            metrics = run_folder.write_outputs(pipeline, staging, checkpointer.elapsed())
            guard.deferred = True  # the publish takes milliseconds: let it finish, the run is then complete
            run_folder.publish(
                staging,
                out,
                run_id,
                cfg,
                extra={
                    "scene_dir": run_folder.relative_scene_dir(scene_dir, out),
                    "scene": run_state.scene_fingerprint(pipeline.scene),
                    "resumed": payload is not None,
                    "checkpoints": {
                        "count": checkpointer.count,
                        "seconds": round(checkpointer.seconds, 4),
                        "max_bytes": checkpointer.max_bytes,
                    },
                },
            )
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        print(summary_line(metrics, out))
        return metrics
    except BaseException:
        run_folder.discard_staging(staging)
        raise


def summary_line(metrics: dict, out: Path) -> str:
    parts = [f"done in {metrics['time_s']:.0f} s"]
    if "pose" in metrics:
        init, final = metrics["pose"]["init"], metrics["pose"]["final"]
        parts.append(
            f"Rot@15 {init['rot15']:.1f} -> {final['rot15']:.1f}, CC@0.1 {init['cc10']:.1f} -> {final['cc10']:.1f}"
        )
    flagged = metrics.get("outliers", {}).get("flagged", [])
    if flagged:
        parts.append(f"outliers {', '.join(flagged)}")
    psnrs = [v["psnr"] for v in metrics["views"].values() if v["flag"] == 1]
    if psnrs:
        parts.append(f"input PSNR {sum(psnrs) / len(psnrs):.2f} dB")
    if "novel" in metrics:
        novel = metrics["novel"]
        refined = novel.get("pose_refined")
        parts.append(
            f"novel PSNR {novel['psnr']:.2f} dB" + (f" ({refined['psnr']:.2f} dB pose-refined)" if refined else "")
        )
    return "; ".join(parts) + f"; outputs in {out}"
