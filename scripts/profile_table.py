"""Per-phase and per-step tables of a py-spy raw profile of ``main.py run`` (issue 25's profile).

    py-spy record -o prof.txt -f raw -r 20 --threads -- python main.py run --scene data/demo --out /tmp/p --quiet
    python scripts/profile_table.py prof.txt

Each sample is attributed to the first rule (in order) whose pattern occurs in its stack; samples are
converted to seconds with the sampling rate. The main thread and any worker threads (numba, torch) are
counted apart: the main thread's rows add up to the run's wall time.
"""

from __future__ import annotations

import argparse
import collections

PHASES = [
    ("imports (at start-up and lazy)", ("_find_and_load",)),
    ("pipeline construction: learned-match rotation averaging", ("_average_rotations",)),
    ("pipeline construction: SIFT matches", ("_pair_matches",)),
    ("scene + LPIPS + prior loading", ("build_pipeline",)),
    ("checkpoints", ("Checkpointer.save",)),
    ("exports: turntable video", ("export_turntable",)),
    ("exports: mesh", ("export_mesh",)),
    ("exports: metrics (novel views, mesh quality)", ("compute_metrics",)),
    ("exports: final state", ("write_final_state",)),
    ("exports: other (PLY, cameras, panels)", ("write_outputs",)),
    ("reconstruction, round 0", ("_step_reconstruct",)),
    ("leave-one-out: scoring (render + LPIPS)", ("_step_loo", "score")),
    ("leave-one-out: evidence", ("_step_loo", "view_evidence")),
    ("leave-one-out: reconstructions", ("_step_loo",)),
    ("pose search: pose solver stage", ("_step_search", "_solver_step")),
    ("pose search: ranking (LPIPS)", ("_step_search", "_rank")),
    ("pose search: Adam stages", ("_step_search",)),
    ("arbitration: align-to-3D", ("_step_arbitration", "aligner")),
    ("arbitration: scoring", ("_step_arbitration", "score")),
    ("arbitration: reconstructions", ("_step_arbitration",)),
    ("other", ("",)),
]

STEP = [
    ("rasterise backward", ("backward", "Rasterize")),
    ("projection backward", ("backward", "Project")),
    ("other backward (blur, losses, SH, pose twist)", ("backward",)),
    ("rasterise forward", ("render", "Rasterize")),
    ("projection forward", ("render", "Project")),
    ("other render forward (SH colours, setup)", ("render_gaussians",)),
    ("Adam", ("Adam.step",)),
    ("densification", ("densif",)),
    ("per-view evidence and guard", ("_record_evidence",)),
    ("losses, blur, bookkeeping", ("_one_step",)),
    ("pose solver passes", ("_solver_iteration",)),
    ("other", ("",)),
]


def classify(stack: str, rules: list) -> str:
    for name, patterns in rules:
        if all(p in stack for p in patterns):
            return name
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    phases: collections.Counter = collections.Counter()
    steps: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    for line in open(args.profile):
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        count = int(count)
        thread = stack.split(";", 1)[0]
        main_thread = "MainThread" in thread
        threads["main" if main_thread else "workers"] += count
        if not main_thread:
            continue
        phases[classify(stack, PHASES)] += count
        if "Reconstruction.step" in stack and "Pipeline.score" not in stack:
            steps[classify(stack, STEP)] += count
    total = sum(phases.values())
    print(f"main thread {threads['main'] / args.rate:.1f} s, worker threads {threads['workers'] / args.rate:.1f} s")
    print("\n| phase | s | % |\n|---|---|---|")
    for name, _ in PHASES:
        if phases[name]:
            print(f"| {name} | {phases[name] / args.rate:.1f} | {100 * phases[name] / total:.1f} |")
    step_total = sum(steps.values())
    print(f"\ninside Reconstruction.step (every reconstruction): {step_total / args.rate:.1f} s\n")
    print("| part of a step | s | % |\n|---|---|---|")
    for name, _ in STEP:
        if steps[name]:
            print(f"| {name} | {steps[name] / args.rate:.1f} | {100 * steps[name] / step_total:.1f} |")


if __name__ == "__main__":
    main()
