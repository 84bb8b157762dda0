"""Runs that survive interruption (issue 18): checkpoints, --resume, an output folder published as one unit,
write failures, signals, and checkpoints that cannot run code.

Fault injection: a hook raises at the k-th pipeline step (``Pipeline.step``) or at the k-th file write
(``sparseags.atomic._before_write``, called before every atomic write: checkpoints, artefacts, run.json).
After every fault the output folder must hold the complete old run (its run.json and files intact) and a
resume must give exactly the result of an uninterrupted run: the same files byte for byte, metrics equal
apart from time_s.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparseags import atomic, run_folder, run_state
from sparseags.config import load_config
from sparseags.errors import UserError
from sparseags.headless import run_headless
from sparseags.pipeline import Pipeline
from tests.helpers import FAST_PIPELINE, TouchOnUnpickle, plain_digest

REPO = Path(__file__).resolve().parent.parent
# The whole procedure (reconstruction, leave-one-out with a forced removal, pose search, arbitration) on a
# 32-pixel scene in a few seconds; a checkpoint after every pipeline step (17 steps; 33 file writes with
# the match cache of an earlier run in the folder: config.yaml, 17 checkpoints, 14 artefacts, run.json).
TINY = [
    *FAST_PIPELINE,
    "pipeline.turntable_frames=4",
    "pipeline.turntable_resolution=32",
    "pipeline.mesh_resolution=24",
    "metrics.novel_pose_steps=0",
    "metrics.mesh_points=2000",
    "run.checkpoint_every_s=0",
]


VARYING_BYTES = ("metrics.json", "final_state.pt")


class InjectedFault(RuntimeError):
    pass


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from sparseags.synth import make_demo_scene

    return make_demo_scene(tmp_path_factory.mktemp("resume") / "scene", seed=0, n_views=5, n_novel=1, resolution=32)


def cfg(*extra: str):
    return load_config(None, TINY + list(extra))


def run(scene, out, *extra, **kwargs):
    return run_headless(scene, out, cfg(*extra), progress=False, **kwargs)


def result_of(out: Path) -> dict:
    """What must be identical between an interrupted-and-resumed run and an uninterrupted one."""
    manifest = run_folder.read_manifest(out)
    assert manifest is not None and run_folder.check_run(out) is None
    # metrics.json holds times; final_state.pt's bytes vary with pickling (its content must not)
    files = {rel: entry["sha256"] for rel, entry in manifest["files"].items() if rel not in VARYING_BYTES}
    # (its config is config.yaml's, compared through that file's hash)
    state = torch.load(out / run_folder.FINAL_STATE, weights_only=True)
    final_state = plain_digest({k: v for k, v in state.items() if k != "config"})
    return {
        "files": files,
        "final_state": final_state,
        "metrics": without_times(json.loads((out / "metrics.json").read_text())),
    }


def without_times(value):
    """Metrics apart from times (time_s, and the seconds a step took, e.g. pose_evidence.matches.seconds)."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in ("time_s", "seconds", "elapsed_s")}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def folder_state(out: Path) -> dict:
    """The published run in `out`: run id and the hash of every file it lists (they must all check out)."""
    assert run_folder.check_run(out) is None, run_folder.check_run(out)
    manifest = run_folder.read_manifest(out)
    return {"run_id": manifest["run_id"], "files": {k: v["sha256"] for k, v in manifest["files"].items()}}


@pytest.fixture(scope="module")
def reference(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    run(scene, out)
    return result_of(out)


@pytest.fixture(scope="module")
def old_run(scene, tmp_path_factory):
    """A complete earlier run (another seed) to be replaced: it must stay intact until the new one is complete."""
    out = tmp_path_factory.mktemp("old") / "out"
    run(scene, out, "seed=1")
    return out


def with_old_run(old_run: Path, tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / "out"
    shutil.copytree(old_run, out)
    return out, folder_state(out)


def fail_at_step(monkeypatch, k: int) -> None:
    calls = [0]
    original = Pipeline.step

    def step(self, budget=1):
        calls[0] += 1
        if calls[0] == k:
            raise InjectedFault(f"step {k}")
        return original(self, budget)

    monkeypatch.setattr(Pipeline, "step", step)


def fail_at_write(monkeypatch, k: int, error: BaseException) -> list:
    calls = []

    def before_write(path):
        calls.append(Path(path))
        if len(calls) == k:
            raise error

    monkeypatch.setattr(atomic, "_before_write", before_write)
    return calls


def no_staging(out: Path) -> bool:
    return not list(out.glob(".staging-*"))


# ------------------------------------------------------------------------------------------------------
# fault injection: k-th step, k-th write


@pytest.mark.parametrize("k", [1, 3, 6, 9, 12, 15, 17])
def test_fault_at_kth_step_keeps_the_old_run_and_resumes_identically(
    scene, reference, old_run, tmp_path, monkeypatch, k
):
    out, old = with_old_run(old_run, tmp_path)
    fail_at_step(monkeypatch, k)
    with pytest.raises(InjectedFault):
        run(scene, out)
    monkeypatch.undo()
    assert folder_state(out) == old and no_staging(out)  # the complete old run, nothing of the new one
    assert run_state.checkpoint_path(out).is_file()
    run(scene, out, resume=True)
    assert result_of(out) == reference
    assert folder_state(out)["run_id"] != old["run_id"]
    assert not run_state.checkpoint_path(out).exists() and no_staging(out)


@pytest.mark.parametrize("k", [2, 11, 18, 21, 24, 27, 30, 32, 33])  # 33: run.json, the last write
def test_fault_at_kth_write_keeps_the_old_run_and_resumes_identically(
    scene, reference, old_run, tmp_path, monkeypatch, k
):
    out, old = with_old_run(old_run, tmp_path)
    calls = fail_at_write(monkeypatch, k, InjectedFault(f"write {k}"))
    with pytest.raises(InjectedFault):
        run(scene, out)
    monkeypatch.undo()
    assert len(calls) == k
    assert folder_state(out) == old and no_staging(out)
    has_checkpoint = run_state.checkpoint_path(out).is_file()
    assert has_checkpoint or k <= 2  # writes 1-2: config.yaml and the first checkpoint
    run(scene, out, resume=has_checkpoint)
    assert result_of(out) == reference


@pytest.mark.parametrize("k", [1, 5, 19, 26, 33])
def test_enospc_at_any_write_is_one_line_and_keeps_the_old_run(scene, old_run, tmp_path, monkeypatch, k):
    out, old = with_old_run(old_run, tmp_path)
    fail_at_write(monkeypatch, k, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(UserError) as caught:
        run(scene, out)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "No space left on device" in message and str(out) in message
    assert folder_state(out) == old and no_staging(out)


def test_interrupted_publish_reads_as_incomplete_and_is_finished_by_the_next_run(
    scene, reference, old_run, tmp_path, monkeypatch
):
    out, old = with_old_run(old_run, tmp_path)
    moves = [0]
    real_replace = os.replace

    def replace(src, dst):
        if ".staging-" in str(src) and not Path(src).name.startswith("."):  # a rename of the publish
            moves[0] += 1
            if moves[0] == 4:  # a kill half-way through the renames
                raise InjectedFault("publish")
        return real_replace(src, dst)

    monkeypatch.setattr(run_folder.os, "replace", replace)
    with pytest.raises(InjectedFault):
        run(scene, out)
    monkeypatch.undo()
    # half of the files are the new run's: there is no run.json, so no reader takes the folder for a run
    assert run_folder.read_manifest(out) is None and "no valid run.json" in run_folder.check_run(out)
    from sparseags.evaluate import load_finished_metrics

    assert load_finished_metrics(out) is None
    run(scene, out, resume=True)  # finishes the publish, then resumes from the last checkpoint
    assert result_of(out) == reference and no_staging(out)


# ------------------------------------------------------------------------------------------------------
# resume: refused checkpoints


def interrupted_run(scene, out: Path, monkeypatch, k: int = 8) -> None:
    fail_at_step(monkeypatch, k)
    with pytest.raises(InjectedFault):
        run(scene, out)
    monkeypatch.undo()


def test_resume_refuses_another_config_or_scene_and_accepts_neutral_settings(scene, reference, tmp_path, monkeypatch):
    from sparseags.synth import make_demo_scene

    out = tmp_path / "out"
    interrupted_run(scene, out, monkeypatch)
    with pytest.raises(run_state.CheckpointError) as caught:
        run(scene, out, "recon.iters=7", resume=True)
    assert len(str(caught.value).splitlines()) == 1 and "another config: recon.iters (6 -> 7)" in str(caught.value)
    other = make_demo_scene(tmp_path / "other", seed=3, n_views=5, n_novel=0, resolution=32)
    with pytest.raises(run_state.CheckpointError, match="a checkpoint of another scene"):
        run(other, out, resume=True)
    # the run section never changes a result: other checkpoint settings may resume
    run(scene, out, "run.checkpoint_every_s=1000", resume=True)
    resumed, expected = result_of(out), dict(reference, files=dict(reference["files"]))
    assert resumed["files"].pop("config.yaml") != expected["files"].pop("config.yaml")  # it records the new value
    assert resumed == expected
    with pytest.raises(run_state.CheckpointError, match="nothing to resume: it holds a complete run"):
        run(scene, out, resume=True)


def run_cli(*args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        **kwargs,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if line.strip() and not line.startswith("notice:")]


def test_resume_refuses_a_checkpoint_carrying_code_and_creates_nothing(scene, tmp_path):
    out = tmp_path / "out"
    marker = tmp_path / "pwned"
    ckpt = run_state.checkpoint_path(out)
    ckpt.parent.mkdir(parents=True)
    torch.save({"format": run_state.RUN_CHECKPOINT_FORMAT, "pipeline": TouchOnUnpickle(marker)}, ckpt)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = run_cli("run", "--scene", scene, "--out", out, "--quiet", "--resume", *TINY)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "refused" in lines[0] and "Traceback" not in result.stderr
    assert not marker.exists(), "unpickling the checkpoint ran code"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing created


def test_resume_without_checkpoint_and_unwritable_output_are_one_line(scene, tmp_path):
    result = run_cli("run", "--scene", scene, "--out", tmp_path / "none", "--quiet", "--resume", *TINY)
    (line,) = error_lines(result.stderr)
    assert result.returncode == 2 and line.startswith("error: ") and "nothing to resume" in line
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli("run", "--scene", scene, "--out", blocker / "out", "--quiet", *TINY)
    (line,) = error_lines(result.stderr)
    assert result.returncode == 2 and line.startswith("error: ") and str(blocker) in line


# ------------------------------------------------------------------------------------------------------
# real processes: SIGKILL, SIGTERM, SIGINT

SLOW = TINY + ["pipeline.outliers=false", "recon.iters=300"]  # one long reconstruction


def wait_for_checkpoint(proc, out: Path, min_steps: int, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    path = run_state.checkpoint_path(out)
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "the run ended early"
        if path.is_file():
            try:
                payload = run_state.read_run_checkpoint(path)
            except run_state.CheckpointError:
                payload = None
            if payload is not None and payload["total_steps"] >= min_steps:
                return payload
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("no checkpoint appeared")


def start_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def slow_reference(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("slowref") / "out"
    result = run_cli("run", "--scene", scene, "--out", out, "--quiet", *SLOW)  # same thread settings as below
    assert result.returncode == 0, result.stderr[-2000:]
    return result_of(out)


def test_sigkill_mid_reconstruction_then_resume_gives_the_same_poses(scene, slow_reference, tmp_path):
    out = tmp_path / "out"
    proc = start_cli("run", "--scene", scene, "--out", out, "--quiet", *SLOW)
    payload = wait_for_checkpoint(proc, out, min_steps=5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert payload["phase"] == "reconstruct"
    assert run_folder.read_manifest(out) is None  # nothing published: the folder reads as incomplete
    result = run_cli("run", "--scene", scene, "--out", out, "--quiet", "--resume", *SLOW)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming reconstruction round 0 at step" in result.stderr
    assert result_of(out) == slow_reference  # same poses (cameras_updated.json), Gaussians, metrics


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_writes_a_checkpoint_and_prints_how_to_resume(scene, slow_reference, tmp_path, signum, code):
    out = tmp_path / "out"
    proc = start_cli("run", "--scene", scene, "--out", out, "--quiet", *SLOW)
    wait_for_checkpoint(proc, out, min_steps=3)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    lines = error_lines(stderr)
    assert proc.returncode == code and len(lines) == 1, stderr
    assert lines[0].startswith("interrupted in reconstruction round 0 at step ") and "resume with: python " in lines[0]
    assert lines[0].endswith("--resume") and "Traceback" not in stderr
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    assert run_state.read_run_checkpoint(run_state.checkpoint_path(out))["total_steps"] == step
    assert no_staging(out)
    if signum == signal.SIGTERM:
        result = run_cli("run", "--scene", scene, "--out", out, "--quiet", "--resume", *SLOW)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result_of(out) == slow_reference


# ------------------------------------------------------------------------------------------------------
# evaluation


def test_eval_resumes_an_interrupted_scene_from_its_checkpoint(scene, reference, tmp_path, monkeypatch, capfd):
    from sparseags.evaluate import load_finished_metrics, run_evaluation

    data = tmp_path / "data"
    shutil.copytree(scene, data / "scene_a")
    out = tmp_path / "eval"
    fail_at_step(monkeypatch, 10)
    with pytest.raises(InjectedFault):
        run_evaluation(data, out, cfg(), None, None, log=lambda s: None)
    monkeypatch.undo()
    job_dir = out / "cameras" / "scene_a"
    assert load_finished_metrics(job_dir) is None and run_state.checkpoint_path(job_dir).is_file()
    capfd.readouterr()
    assert run_evaluation(data, out, cfg(), None, None, log=lambda s: None) == 0
    assert "resuming " in capfd.readouterr().err
    assert result_of(job_dir) == reference
    metrics = load_finished_metrics(job_dir)
    # --rescore rewrites metrics.json and records it in run.json: the run stays complete
    assert run_evaluation(data, out, cfg(), None, None, log=lambda s: None, rescore=True) == 0
    assert run_folder.check_run(job_dir) is None and load_finished_metrics(job_dir)["pose"] == metrics["pose"]
