"""SparseAGS Studio command line: the debugger, the headless pipeline, scene tools and benchmarks.

    python main.py                         the debugger on the demo scene (generated on first use)
    python main.py gui --scene DIR         the debugger on a scene
    python main.py demo [--out data/demo]  make the synthetic demo scene
    python main.py validate --scene DIR    check a scene (exit 0, or one error line and exit 2)
    python main.py import --images DIR [--masks DIR] [--poses PATH] --out SCENE   your own photos
    python main.py run --scene DIR         the headless pipeline, artefacts in --out
    python main.py eval --data DIR         evaluate over many scenes
    python main.py bench render|prior|orbit

Every command that runs the engine takes ``--config F`` and ``section.key=value`` overrides.
Argument parsing, dispatch and the command bodies live here (the engine, ``sparseags/``, knows nothing of
the command line or the debugger); the debugger itself is ``gui/app.py``. Each ``cmd_*`` takes the parsed
``argparse.Namespace`` and returns an exit status; user mistakes raise
:class:`sparseags.errors.UserError`, printed as one line with exit 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

# torch's OpenMP threads busy-wait by default; on a busy machine (the GUI thread, numba's threads) that
# costs up to 10x on small tensor operations. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROCESS_STARTED = time.perf_counter()  # before torch and the window are imported (`gui --run` reports from here)
REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
DEFAULT_DEMO = REPO_ROOT / "data" / "demo"


# -------------------------------------------------------------------------------------------------
# commands


def load_run_config(args: argparse.Namespace):
    """The resolved config of a command: configs/default.yaml (or --config) plus key=value overrides."""
    from sparseags.config import load_config

    path = args.config if getattr(args, "config", None) else DEFAULT_CONFIG
    return load_config(path, list(getattr(args, "overrides", None) or []))


def ensure_demo_scene(path: Path = DEFAULT_DEMO) -> Path:
    """Generate the demo scene at `path` unless a complete one is already there."""
    if (path / "cameras.json").is_file():
        return path
    from sparseags.synth import make_demo_scene

    print(f"making the demo scene in {path} ...")
    return make_demo_scene(path)


def cmd_demo(args: argparse.Namespace) -> int:
    from sparseags.synth import make_demo_scene

    start = time.perf_counter()
    out = make_demo_scene(Path(args.out), seed=args.seed)
    print(f"demo scene written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from sparseags.scene import validate_scene

    print(validate_scene(Path(args.scene), resolution=args.resolution))
    print("ok")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from sparseags.headless import run_headless

    cfg = load_run_config(args)
    if args.init is not None:
        cfg.scene.init = args.init
    scene_dir = Path(args.scene)
    if scene_dir.resolve() == DEFAULT_DEMO.resolve():
        ensure_demo_scene(scene_dir)
    out = Path(args.out) if args.out else REPO_ROOT / "outputs" / scene_dir.resolve().name
    run_headless(
        scene_dir,
        out,
        cfg,
        decisions=args.decisions,
        progress=not args.quiet,
        resume=bool(getattr(args, "resume", False)),
    )
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    """The debugger on a scene, a raw capture (imported first), a run folder (``--run``, with ``--compare``)
    or an evaluation folder (``--eval``). Folders are checked before any window opens: a refused one is one
    line and exit 2, and nothing is written."""
    from sparseags.errors import UserError

    try:
        from gui.app import run_app
        from gui.importer import find_capture, is_scene
        from gui.script import load_script
    except ImportError as err:
        raise UserError(f"the debugger cannot start: {err}") from None

    if getattr(args, "script", None):
        load_script(args.script)  # a bad script is reported before anything else is looked at
    cfg = load_run_config(args)
    scene = getattr(args, "scene", None)
    run_dir, compare_dir, eval_dir = (getattr(args, k, None) for k in ("run", "compare", "eval"))
    if compare_dir and not run_dir:
        raise UserError("--compare needs --run (the run to compare it with)")
    if run_dir and eval_dir:
        raise UserError("--run and --eval open different things: give one")
    import_raw = False
    if run_dir:
        from sparseags.run_folder import inspect_run

        info = inspect_run(Path(run_dir), Path(scene) if scene else None)
        other = inspect_run(Path(compare_dir), info.scene_dir) if compare_dir else None
        cfg = info.cfg  # the run's own config; the window's settings come from this command
        cfg.gui = load_run_config(args).gui
        scene_dir = info.scene_dir
    elif eval_dir:
        from sparseags.evaluate import read_evaluation

        read_evaluation(Path(eval_dir))
        scene_dir = Path(eval_dir)
    elif scene:
        scene_dir = Path(scene)
        if not scene_dir.is_dir():
            raise UserError(f"{scene_dir}: no such folder")
        if not is_scene(scene_dir):
            find_capture(scene_dir)  # a raw capture: imported in the window; not one is an error now
            import_raw = True
    else:
        scene_dir = ensure_demo_scene(DEFAULT_DEMO)
    return run_app(
        scene_dir,
        cfg,
        out_dir=Path(args.out) if getattr(args, "out", None) else None,
        script=getattr(args, "script", None),
        screenshot=getattr(args, "screenshot", None),
        run_dir=info if run_dir else None,  # checked once, here: the window opens what was checked
        compare_dir=other if compare_dir else None,
        eval_dir=Path(eval_dir) if eval_dir else None,
        import_raw=import_raw,
        started_at=PROCESS_STARTED,
    )


def _split_overrides(values: list[str] | None) -> tuple[list[str], list[str]]:
    """(plain values, key=value items): argparse lets `--init a b k=v` swallow trailing overrides."""
    values = list(values or [])
    return [v for v in values if "=" not in v], [v for v in values if "=" in v]


def cmd_eval(args: argparse.Namespace) -> int:
    from sparseags.evaluate import run_evaluation

    if args.init is not None:
        args.init, moved = _split_overrides(args.init)
        args.overrides = list(args.overrides or []) + moved
    if args.ray is not None and "=" in args.ray:
        args.overrides = list(args.overrides or []) + [args.ray]
        args.ray = "local"
    cfg = load_run_config(args)
    out = Path(args.out) if args.out else REPO_ROOT / "outputs" / "eval"
    return run_evaluation(
        Path(args.data),
        out,
        cfg,
        presets=args.init,
        ray_address=args.ray,
        rescore=bool(getattr(args, "rescore", False)),
        jobs=parse_jobs(getattr(args, "jobs", "auto")),
    )


def parse_jobs(text: str) -> int | None:
    """``--jobs``: "auto" (None: one per CPU) or a positive whole number; anything else is a one-line error."""
    from sparseags.evaluate import EvaluationError

    if str(text).strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise EvaluationError(f"--jobs {text!r}: expected 'auto' or a positive number of runs side by side")
    return value


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "render":
        from sparseags.bench import bench_render_main

        return bench_render_main(json_out=args.json, quick=args.quick)
    if args.what == "basin":
        from sparseags.basin import bench_basin_main

        if Path(args.scene) == DEFAULT_DEMO or args.scene == "data/demo":
            ensure_demo_scene()
        return bench_basin_main(
            scene=args.scene,
            out=args.out or "outputs/bench_basin",
            cases=args.case,
            solvers=args.solver,
            model=args.model,
            json_out=args.json,
            quick=args.quick,
            config=args.config or str(DEFAULT_CONFIG),
            overrides=args.overrides,
        )
    if args.what == "prior":
        from sparseags.prior.bench import bench_prior_main

        return bench_prior_main(json_out=args.json, quick=args.quick)
    from gui.bench_orbit import bench_orbit_main

    return bench_orbit_main(json_out=args.json, quick=args.quick)


def cmd_import(args: argparse.Namespace) -> int:
    from sparseags.capture import import_capture

    report = import_capture(
        args.images,
        args.out,
        masks=args.masks,
        poses=args.poses,
        fmt=args.format,
        resolution=args.resolution,
        margin=args.margin,
    )
    print(report.summary())
    return 0


# -------------------------------------------------------------------------------------------------
# parsing and dispatch


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config file (default: configs/default.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. recon.iters=300")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="SparseAGS Studio")
    sub = parser.add_subparsers(dest="command")

    gui = sub.add_parser("gui", help="open the visual debugger")
    gui.add_argument("--scene", default=None, help="scene folder (default: the demo scene)")
    gui.add_argument("--out", default=None, help="output folder for exports and the decision log")
    gui.add_argument("--script", default=None, help="YAML list of actions to run (scripted mode)")
    gui.add_argument("--screenshot", default=None, help="save a screenshot after the script and exit")
    gui.add_argument("--run", default=None, help="open a run folder: finished (run.json) or interrupted (checkpoint)")
    gui.add_argument("--compare", default=None, help="with --run: compare it with this run folder of the same scene")
    gui.add_argument("--eval", default=None, help="open an evaluation folder's table of runs")
    _add_config_args(gui)

    demo = sub.add_parser("demo", help="make the synthetic demo scene")
    demo.add_argument("--out", default=str(DEFAULT_DEMO), help="output folder (default: data/demo)")
    demo.add_argument("--seed", type=int, default=0)

    validate = sub.add_parser("validate", help="check a scene folder")
    validate.add_argument("--scene", required=True)
    validate.add_argument("--resolution", type=int, default=256)

    run = sub.add_parser("run", help="run the pipeline headless")
    run.add_argument("--scene", default=str(DEFAULT_DEMO), help="scene folder (default: data/demo)")
    run.add_argument("--init", default=None, help="initial-pose preset under <scene>/init/")
    run.add_argument("--out", default=None, help="output folder (default: outputs/<scene name>)")
    run.add_argument("--decisions", default=None, help="YAML/JSON log of manual decisions to replay")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--resume", action="store_true", help="continue from <out>/.checkpoint (same scene and config)")
    _add_config_args(run)

    evaluate = sub.add_parser("eval", help="evaluate over every scene under a folder")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--init", nargs="*", default=None, help="init presets (default: the scene's cameras.json)")
    evaluate.add_argument("--out", default=None)
    evaluate.add_argument(
        "--ray", nargs="?", const="local", default=None, help="spread scenes over Ray (local, or ray://host:port)"
    )
    evaluate.add_argument(
        "--rescore", action="store_true", help="recompute novel-view and mesh metrics of finished runs from their files"
    )
    evaluate.add_argument(
        "--jobs",
        default="auto",
        help="runs side by side on this machine without Ray (default auto: one per CPU, one thread each)",
    )
    _add_config_args(evaluate)

    imp = sub.add_parser("import", help="make a scene from your own photos, masks and poses")
    imp.add_argument("--images", required=True, help="folder of photos (any size; PNG/JPEG; alpha = mask)")
    imp.add_argument("--masks", default=None, help="folder of masks matched by file stem (default: alpha, or ../masks)")
    imp.add_argument(
        "--poses",
        default=None,
        help="COLMAP model folder, transforms.json or cameras.json (default: structure from motion with pycolmap)",
    )
    imp.add_argument(
        "--format",
        default=None,
        choices=["colmap", "nerfstudio", "sparseags"],
        help="poses format (default: from the path)",
    )
    imp.add_argument("--out", required=True, help="new scene folder")
    imp.add_argument("--resolution", type=int, default=256)
    imp.add_argument("--margin", type=float, default=0.8, help="object bbox / crop side (SparseAGS: 0.8)")

    bench = sub.add_parser("bench", help="micro-benchmarks")
    bench.add_argument("what", choices=["render", "prior", "orbit", "basin"])
    bench.add_argument("--json", action="store_true", help="print JSON (basin: one object with a list `cases`)")
    bench.add_argument("--quick", action="store_true", help="small sizes only (smoke test; basin: one case, o10)")
    bench.add_argument("--scene", default="data/demo", help="basin: a scene with cameras_gt.json")
    bench.add_argument("--out", default=None, help="basin: folder for the cached frozen models")
    bench.add_argument(
        "--case",
        action="append",
        default=None,
        help="basin: o2 o10 o20 o10t8 o20t8f preset:NAME, or search[:PRESET] (the pose search on the preset's outliers: the Adam stages + solver stage, and the solver mode) (repeat)",
    )
    bench.add_argument(
        "--solver",
        action="append",
        default=None,
        help="basin: default adam_object adam_camera; for search cases adam or solver (the search's refinement) (repeat)",
    )
    bench.add_argument(
        "--model",
        choices=["gt", "noisy"],
        default="gt",
        help="basin: train the frozen model at the GT or the initial poses",
    )
    bench.add_argument("--config", default=None, help="basin: YAML config (default configs/default.yaml)")
    bench.add_argument("overrides", nargs="*", help="basin: section.key=value")
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command in (None, "gui"):
        return cmd_gui(args)
    handler = {
        "demo": cmd_demo,
        "validate": cmd_validate,
        "run": cmd_run,
        "eval": cmd_eval,
        "bench": cmd_bench,
        "import": cmd_import,
    }[args.command]
    return handler(args)


class _Terminated(Exception):
    """SIGTERM before a run installs its own handler (loading, match extraction): nothing to resume yet."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `bench basin DIR ... k=v`: options may come before the overrides; every other stray is an error.
        if getattr(args, "command", None) == "bench" and all(
            "=" in item and not item.startswith("-") for item in extra
        ):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from sparseags.errors import RunInterrupted, UserError

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return dispatch(args)
    except _Terminated:
        print(
            "interrupted (SIGTERM) before the first checkpoint: nothing to resume; start the command again",
            file=sys.stderr,
        )
        return 143
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunInterrupted as err:  # SIGINT / SIGTERM after the checkpoint: one line, 130 / 143
        print(err, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
