"""`Open scene...` on a raw capture (issue 16, item 2): the debugger imports it on the engine thread with a
progress bar and opens the imported scene.

Captures are built in code with tests/test_import.py's builders (non-square photos, masks, known poses):

* folder recognition (no display): a scene, a raw capture with a COLMAP model / transforms.json / nothing, a
  cameras.json beside full-size photos (poses, not a scene), a folder with no photos; fresh scene names;
* in the real window (under ``xvfb-run``), scripted ``open_scene``: the capture is imported beside it (then
  ``_scene2``, never over a non-empty folder; under ``--out`` when the run has one) and opened (scene path,
  view ids); the dialog's callback shows the progress bar while the import runs (screenshot); a bad capture
  is exit 2 with one line, a red status, the old scene kept and nothing written; so is a folder with no photos.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from PIL import Image
from test_import import IDS, build_capture, write_colmap, write_nerfstudio, write_sparseags_full

from tests.helpers import run_gui_script

FAST = [
    "recon.iters=4",
    "recon.num_pts=200",
    "recon.resolution_schedule=[[0.0,32]]",
    "outliers.round_iters=2",
    "outliers.score=mse",
    "lpips.weights_dir=/nonexistent/lpips",
    "scene.resolution=32",
    "pipeline.outliers=false",
    "prior.enabled=false",
    "device=cpu",
    # opening a scene is what these tests check, not its start: no learned matches on every imported capture
    "pipeline.rotation_averaging=false",
]
needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run -a)")


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """Raw captures: COLMAP model in colmap/, transforms.json, a cameras.json of the full photos, a bad mask."""
    root = tmp_path_factory.mktemp("captures")
    cap = build_capture(root / "shoe")  # photos/, masks/
    write_colmap(cap, cap["root"] / "colmap")
    nerf = build_capture(root / "nerf", seed=1)
    write_nerfstudio(nerf, nerf["root"] / "transforms.json")
    full = build_capture(root / "full", seed=2)
    write_sparseags_full(full, full["root"] / "cameras.json")
    bad = build_capture(root / "bad", seed=3)
    write_colmap(bad, bad["root"] / "colmap")
    Image.fromarray(np.full((40, 50), 255, np.uint8)).save(bad["masks"] / "a1.png")  # wrong size
    empty = root / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    return {
        "root": root,
        "colmap": cap["root"],
        "nerf": nerf["root"],
        "full": full["root"],
        "bad": bad["root"],
        "empty": empty,
    }


# ------------------------------------------------------------------------------------------------------
# recognising the folder (no display)


def test_folders_are_told_apart(captures, tmp_path) -> None:
    from gui.importer import find_capture, is_scene
    from sparseags.capture import CaptureError, import_capture

    layout = find_capture(captures["colmap"])
    assert (layout.images.name, layout.masks.name, layout.fmt) == ("photos", "masks", "colmap")
    assert layout.poses == captures["colmap"] / "colmap"
    assert "colmap poses (colmap/)" in layout.describe()
    nerf = find_capture(captures["nerf"])
    assert nerf.fmt == "nerfstudio" and nerf.poses == captures["nerf"] / "transforms.json"
    full = find_capture(captures["full"])
    assert not is_scene(captures["full"]), "a cameras.json beside full-size photos is a capture's poses"
    assert full.fmt == "sparseags"
    no_poses = tmp_path / "plain"
    (no_poses / "images").mkdir(parents=True)
    for view_id in IDS:
        (no_poses / "images" / f"{view_id}.png").write_bytes(
            (captures["colmap"] / "photos" / f"{view_id}.png").read_bytes()
        )
    plain = find_capture(no_poses)
    assert plain.poses is None and plain.fmt is None and plain.masks is None
    assert "structure from motion" in plain.describe()
    with pytest.raises(CaptureError, match="neither a scene"):
        find_capture(captures["empty"])
    scene = tmp_path / "scene"
    import_capture(
        captures["colmap"] / "photos", scene, poses=captures["colmap"] / "colmap", resolution=32, log=lambda *_: None
    )
    assert is_scene(scene) and not is_scene(captures["colmap"])


def test_fresh_scene_names_never_overwrite(tmp_path) -> None:
    from gui.importer import fresh_scene_dir

    capture_dir = tmp_path / "cap"
    capture_dir.mkdir()
    assert fresh_scene_dir(capture_dir) == tmp_path / "cap_scene"
    (tmp_path / "cap_scene").mkdir()
    assert fresh_scene_dir(capture_dir) == tmp_path / "cap_scene", "an empty folder may be used"
    (tmp_path / "cap_scene" / "cameras.json").write_text("{}")
    assert fresh_scene_dir(capture_dir) == tmp_path / "cap_scene2"
    (tmp_path / "cap_scene2").write_text("a file")
    assert fresh_scene_dir(capture_dir) == tmp_path / "cap_scene3"
    assert fresh_scene_dir(capture_dir, tmp_path / "out") == tmp_path / "out" / "cap_scene"


# ------------------------------------------------------------------------------------------------------
# the real window


@pytest.fixture(scope="module")
def session(captures, tmp_path_factory):
    import dearpygui.dearpygui as dpg

    from gui import importer
    from gui.app import DebuggerApp
    from gui.script import ScriptRunner, parse_script
    from sparseags.config import load_config
    from sparseags.synth import make_demo_scene

    root = tmp_path_factory.mktemp("gui_import")
    start = make_demo_scene(root / "demo", seed=0, n_views=4, n_novel=0, resolution=32)
    app = DebuggerApp(start, load_config(None, FAST), None)
    app.start_engine()
    app.build_window()
    facts: dict = {"root": root, "start": start}

    def run(script: list) -> tuple[int, str | None, dict]:
        runner = ScriptRunner(app, parse_script(script))
        code = app.run(runner)
        app.jobs.poll()
        return code, runner.error, runner.results

    def state() -> dict:
        view = app.worker.view
        return {
            "scene_dir": app.scene_dir,
            "ids": list(view.ids),
            "pipeline_scene": app.worker.pipeline.scene.ids,
            "status": app.ui.status,
            "red": app.ui.status_is_error,
            "bar": app.import_progress.read() if app.import_progress else None,
            "bar_state": app.import_progress.state if app.import_progress else None,
        }

    try:
        # 1. scripted: a COLMAP capture is imported beside it and opened; then the same capture again
        shot = root / "imported.png"
        facts["shot"] = shot
        facts["first"] = run([{"open_scene": str(captures["colmap"])}, {"screenshot": str(shot)}])
        facts["first_state"] = state()
        facts["again"] = run([{"open_scene": str(captures["colmap"])}])
        facts["again_state"] = state()
        # 2. an imported scene is opened as a scene (no new import)
        facts["reopen"] = run([{"open_scene": str(captures["root"] / "shoe_scene")}])
        facts["reopen_state"] = state()
        facts["folders_after_reopen"] = sorted(p.name for p in captures["root"].iterdir())
        # 3. with the run's --out: under it (a transforms.json capture)
        app.explicit_out, app.out_dir = True, root / "out"
        facts["nerf"] = run([{"open_scene": str(captures["nerf"])}])
        facts["nerf_state"] = state()
        app.explicit_out = False
        # 4. the dialog's callback, frame by frame: the progress bar shows while the import runs
        gate, reached = threading.Event(), threading.Event()
        real = importer.capture.import_capture

        def held(*args, **kwargs):
            inner = kwargs["progress"]

            def progress(done, total):
                inner(done, total)
                if done == 2:  # hold the import half-way through reading the photos
                    reached.set()
                    gate.wait(60)

            return real(*args, **{**kwargs, "progress": progress})

        importer.capture.import_capture = held
        try:
            app.controls._scene_chosen(None, {"file_path_name": str(captures["full"])})
            for _ in range(3000):
                app.frame()
                if reached.is_set():
                    break
            for _ in range(5):
                app.frame()
            facts["during"] = state()
            facts["bar_shown"] = bool(dpg.get_item_configuration(app.controls.import_bar)["show"])
            progress_shot = root / "import_progress.png"
            done = app.request_screenshot(progress_shot)
            while not done.is_set():
                app.frame()
            facts["progress_shot"] = progress_shot
        finally:
            gate.set()
            importer.capture.import_capture = real
        facts["full"] = run([{"wait_frames": 1}])  # settles: the import finishes and the scene opens
        facts["full_state"] = state()
        # 5. failures: exit 2, one line, red status, the old scene kept, nothing written
        before = app.scene_dir
        facts["bad"] = run([{"open_scene": str(captures["bad"])}])
        facts["bad_state"] = state()
        facts["empty"] = run([{"open_scene": str(captures["empty"])}])
        facts["empty_state"] = state()
        facts["kept"] = before
        facts["folders_after_failures"] = sorted(p.name for p in captures["root"].iterdir())
        yield facts
    finally:
        app.close()


@needs_display
def test_scripted_open_imports_a_raw_capture_and_opens_it(session, captures) -> None:
    from sparseags.scene import validate_scene

    code, error, results = session["first"]
    assert (code, error) == (0, None)
    scene = captures["root"] / "shoe_scene"
    first = session["first_state"]
    assert first["scene_dir"] == scene and results["open_scene"] == [str(scene)]
    assert first["ids"] == IDS and list(first["pipeline_scene"]) == IDS
    assert (scene / "cameras.json").is_file() and (scene / "normalisation.json").is_file()
    validate_scene(scene)
    assert "opened" in first["status"] and not first["red"]
    assert first["bar_state"] == "done" and first["bar"][0] == 1.0
    assert Image.open(session["shot"]).size[0] > 1000
    # the same capture again: a fresh folder, the first one untouched
    code, error, results = session["again"]
    assert (code, error) == (0, None)
    assert session["again_state"]["scene_dir"] == captures["root"] / "shoe_scene2"
    assert json.loads((scene / "import.json").read_text())["imported"] == IDS


@needs_display
def test_an_imported_scene_is_opened_as_a_scene(session, captures) -> None:
    assert session["reopen"][:2] == (0, None)
    assert session["reopen_state"]["scene_dir"] == captures["root"] / "shoe_scene"
    assert "shoe_scene3" not in session["folders_after_reopen"]


@needs_display
def test_import_goes_under_the_runs_out(session, captures) -> None:
    assert session["nerf"][:2] == (0, None), session["nerf"][1]
    assert session["nerf_state"]["scene_dir"] == session["root"] / "out" / "nerf_scene"
    assert session["nerf_state"]["ids"] == IDS
    assert json.loads((session["root"] / "out" / "nerf_scene" / "import.json").read_text())["format"] == "nerfstudio"


@needs_display
def test_progress_bar_and_status_while_importing(session, captures) -> None:
    during = session["during"]
    assert session["bar_shown"]
    assert during["bar_state"] == "running" and 0.0 < during["bar"][0] < 1.0
    assert "reading photos and masks 2/5" in during["bar"][1]
    assert during["status"].startswith("importing full") and not during["red"]
    assert during["scene_dir"] == session["root"] / "out" / "nerf_scene"  # not switched before the import ends
    assert Image.open(session["progress_shot"]).size[0] > 1000
    assert session["full"][:2] == (0, None)
    assert session["full_state"]["scene_dir"] == captures["root"] / "full_scene"
    assert session["full_state"]["ids"] == IDS


@needs_display
def test_a_bad_capture_is_exit_2_one_line_red_and_changes_nothing(session, captures) -> None:
    for name, fragment in (("bad", "mask is 50x40 but its image is 200x150"), ("empty", "neither a scene")):
        code, error, _ = session[name]
        assert code == 2, name
        assert error is not None and len(error.splitlines()) == 1 and fragment in error, (name, error)
        assert error.startswith("action 1 (open_scene)")
        state = session[f"{name}_state"]
        assert state["red"] and fragment in state["status"], state["status"]
        assert state["scene_dir"] == session["kept"]
    assert session["bad_state"]["bar_state"] == "failed"
    assert "bad_scene" not in session["folders_after_failures"]
    assert not any(name.startswith(".bad_scene") for name in session["folders_after_failures"])
    assert "empty_scene" not in session["folders_after_failures"]


@needs_display
def test_cli_script_on_a_bad_capture_is_exit_2_with_one_error_line(session, captures, tmp_path) -> None:
    script = tmp_path / "open.yaml"
    script.write_text(f"- open_scene: {captures['bad']}\n")
    result = run_gui_script(session["start"], tmp_path / "out", script, FAST)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mask is 50x40" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@needs_display
def test_gui_scene_on_a_raw_capture_imports_it_in_the_window(captures, tmp_path) -> None:
    """``gui --scene RAW`` imports as *Open scene...* does (into ``--out``), then opens the imported scene."""
    script = tmp_path / "look.yaml"
    script.write_text("- step: 1\n")
    out = tmp_path / "out"
    result = run_gui_script(captures["nerf"], out, script, FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = out / "nerf_scene"
    assert (imported / "cameras.json").is_file(), sorted(p.name for p in out.iterdir())
    assert "Traceback" not in result.stderr


@needs_display
def test_gui_scene_on_a_bad_capture_is_exit_2_with_one_error_line_and_nothing_written(captures, tmp_path) -> None:
    script = tmp_path / "look.yaml"
    script.write_text("- step: 1\n")
    out = tmp_path / "out"
    result = run_gui_script(captures["bad"], out, script, FAST)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mask is 50x40" in errors[0], result.stderr
    assert not out.exists() or not any(p.name.startswith(("bad_scene", ".bad_scene")) for p in out.iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_gui_script(empty, out, script, FAST)
    assert result.returncode == 2 and "Traceback" not in result.stderr
