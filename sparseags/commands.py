"""The bodies of the command-line commands (``main.py`` only parses and dispatches).

Each ``cmd_*`` takes the parsed ``argparse.Namespace`` and returns an exit status. User mistakes
raise :class:`sparseags.errors.UserError`; ``main.py`` prints them as one line and exits 2.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sparseags.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
DEFAULT_DEMO = REPO_ROOT / "data" / "demo"


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
    run_headless(scene_dir, out, cfg, decisions=args.decisions, progress=not args.quiet,
                 resume=bool(getattr(args, "resume", False)))
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    try:
        from gui.app import run_app
    except ImportError as err:
        raise UserError(f"the debugger cannot start: {err}") from None

    cfg = load_run_config(args)
    scene = getattr(args, "scene", None)
    scene_dir = Path(scene) if scene else ensure_demo_scene(DEFAULT_DEMO)
    return run_app(
        scene_dir,
        cfg,
        out_dir=Path(args.out) if getattr(args, "out", None) else None,
        script=getattr(args, "script", None),
        screenshot=getattr(args, "screenshot", None),
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
    return run_evaluation(Path(args.data), out, cfg, presets=args.init, ray_address=args.ray,
                          rescore=bool(getattr(args, "rescore", False)))


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "render":
        from sparseags.bench import bench_render_main

        return bench_render_main(json_out=args.json, quick=args.quick)
    if args.what == "prior":
        from sparseags.prior.bench import bench_prior_main

        return bench_prior_main(json_out=args.json, quick=args.quick)
    from gui.bench_orbit import bench_orbit_main

    return bench_orbit_main(json_out=args.json, quick=args.quick)


def cmd_import(args: argparse.Namespace) -> int:
    from sparseags.capture import import_capture

    report = import_capture(args.images, args.out, masks=args.masks, poses=args.poses, fmt=args.format,
                            resolution=args.resolution, margin=args.margin)
    print(report.summary())
    return 0
