"""The debugger's inspection panels in the real window (issue 14, "what the window must show"; run under xvfb-run).

One window on a tiny demo scene (with ground truth), driven by script actions:

* the search panel: ``hover_cell`` gives the cell's MSE, best radius and LPIPS; ``apply_cell`` applies a
  heatmap cell's hypothesis, and the view's shown pose (frustum) and its input-vs-render tile change at once,
  before any arbitration; the target photo is shown beside the candidates;
* the arbitration tab: per searched view both reconstructions' scores, the winner and why;
  ``choose_arbitration`` for one view overrules it (logged in decisions.json);
* the pose-accuracy tab and the controls' line: per-view errors and Rot@5 / Rot@15 / CC@0.1, start and now;
* read-outs: the loss curves are unweighted, the seed field follows a scripted reset;
* the layout: ``resize`` to 1366 x 768 and 1920 x 1080, every window keeps its share of the viewport.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.helpers import FAST_PIPELINE

pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run -a)")

FAST = FAST_PIPELINE + ["outliers.rule=paper"]  # the absolute rule: with threshold -1 every candidate is removed


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    import dearpygui.dearpygui as dpg

    from gui.app import DebuggerApp
    from gui.panels.orbit_view import _text_width as text_width
    from gui.script import ScriptRunner, parse_script
    from sparseags.config import load_config
    from sparseags.synth import make_demo_scene

    root = tmp_path_factory.mktemp("panels")
    scene = make_demo_scene(root / "scene", seed=0, n_views=5, n_novel=0, resolution=32)
    out = root / "out"
    app = DebuggerApp(scene, load_config(None, FAST), out)
    app.start_engine()
    app.build_window()
    facts: dict = {"root": root, "out": out}

    def run(script: list) -> dict:
        runner = ScriptRunner(app, parse_script(script))
        code = app.run(runner)
        assert (code, runner.error) == (0, None), runner.error
        return runner.results

    try:
        facts["initial_losses"] = dict(app.controls.loss_data)
        run([{"run_until": "search"}, {"run_until": "arbitration"}])
        p = app.worker.pipeline
        view_index = int(p.search_order[0])
        facts["view"] = view_index
        search = app.worker.view.searches[view_index]
        facts["target_shown"] = float(np.abs(app.heatmap.target.buffer - 0.12).max())
        facts["rank_rule"] = app.heatmap.rule.value
        facts["thumb_labels"] = [dpg.get_value(label) for _, label, _ in app.heatmap.thumbs]
        # a cell no final candidate came from (its grid pose is applied), else any cell
        empty = np.argwhere(search.cell_rank < 0)
        cell = [int(v) for v in (empty[0] if len(empty) else (0, 0))]
        facts["cell"] = cell
        facts["hover"] = run([{"select_view": view_index}, {"hover_cell": cell}])["hover_cell"][0]
        facts["readout"] = app.heatmap.readout.value
        before_w2c = np.asarray(app.worker.view.w2c_current[view_index]).copy()
        before_tile = np.asarray(app.overlays.data.renders[view_index]).copy()
        facts["applied"] = run([{"apply_cell": {"view": view_index, "cell": cell}}])["apply_cell"][0]
        view = app.worker.view
        facts["phase_after_apply"] = view.phase
        facts["picked"] = view.picked_views
        facts["pose_moved"] = float(np.abs(view.w2c_current[view_index] - before_w2c).max())
        facts["pose_is_pick"] = float(np.abs(view.w2c_current[view_index] - p.searches[view_index].chosen_w2c()).max())
        facts["tile_changed"] = float(np.abs(app.overlays.data.renders[view_index] - before_tile).max())
        facts["manual_w2c"] = p.searches[view_index].manual_w2c is not None
        facts["status_apply"] = app.ui.status
        # the arbitration: its tab, then overrule one view
        run([{"run_until": "done"}, {"tab": "arbitration"}])
        facts["rows"] = [dict(r) for r in app.arbitration_panel.rows]
        facts["summary"] = app.arbitration_panel.summary.value
        facts["regions_arbitration"] = app.regions()
        row = facts["rows"][0]
        other = "initial" if row["choice"] == "recovered" else "recovered"
        facts["other"] = other
        run([{"choose_arbitration": {"choice": other, "view": row["id"]}}, {"run_until": "done"}])
        arb = app.worker.view.arbitration
        facts["arb_after"] = next((v for v in arb.views if v["view"] == row["view"]), arb)
        facts["decisions"] = json.loads((out / "decisions.json").read_text())["decisions"]
        # pose accuracy
        run([{"tab": "accuracy"}])
        facts["accuracy_rows"] = list(app.accuracy.rows)
        facts["accuracy_headline"] = app.accuracy.headline.value
        facts["accuracy_line"] = app.controls.accuracy.value
        facts["regions_accuracy"] = app.regions()
        facts["losses"] = dict(app.controls.loss_data)
        facts["history"] = dict(app.worker.view.history)
        facts["recon_iters"] = app.worker.view.recon_iters
        facts["loss_title"] = dpg.get_item_label(app.controls.loss_plot)
        # the seed field follows a scripted reset
        run([{"seed": 7}])
        facts["seed_field"] = dpg.get_value(app.controls.seed)
        # resizing
        for size in ((1366, 768), (1920, 1080)):
            run([{"resize": list(size)}, {"tab": "overlays"}])
            facts[f"size_{size[0]}"] = (
                app.viewport_size,
                dict(app.layout),
                app.regions(),
                (dpg.get_viewport_client_width(), dpg.get_viewport_client_height()),
                {
                    "size": app.orbit.size,
                    "renderer": (app.orbit.renderer.width, app.orbit.renderer.height),
                    "texture": app.orbit.texture.buffer.shape,
                    "drawlist": dpg.get_item_width(app.orbit.drawlist),
                    "shown": app.orbit.shown_texture == app.orbit.texture.tag,
                    "darkest": float(app.orbit.texture.buffer.min()),
                    # right end of each legend label (x + its width): the legend wraps inside the view
                    "legend_right": max(
                        dpg.get_item_configuration(items[-1])["pos"][0]
                        + text_width(dpg.get_item_configuration(items[-1])["text"], 13)
                        for items in app.orbit.legend_items.values()
                    ),
                },
            )
        yield facts
    finally:
        app.close()


def test_hover_read_out_names_mse_radius_and_lpips(session) -> None:
    hover = session["hover"]
    assert hover == session["readout"]
    assert "MSE" in hover and "best radius" in hover and "LPIPS" in hover, hover
    assert "elev" in hover and "azim" in hover


def test_search_panel_shows_the_target_and_labelled_candidates(session) -> None:
    assert session["target_shown"] > 0.1  # the photo is drawn, not the empty fill
    assert "rank rule" in session["rank_rule"] and "MSE" in session["rank_rule"]
    labelled = [label for label in session["thumb_labels"] if label.startswith("#")]
    assert labelled and all("M " in label for label in labelled if "\n" in label), session["thumb_labels"]


def test_apply_cell_moves_the_frustum_and_the_tile_at_once(session) -> None:
    assert session["applied"]["radius"] > 0
    assert session["manual_w2c"] or session["applied"]["rank_position"] is not None
    assert session["phase_after_apply"] == "search"  # the arbitration is to run again, not yet run
    assert session["view"] in session["picked"]
    assert session["pose_is_pick"] < 1e-6  # the shown pose is the applied hypothesis
    assert session["pose_moved"] > 1e-4
    assert session["tile_changed"] > 1e-4  # the tile was re-rendered at the new pose
    assert "applied to view" in session["status_apply"]


def test_arbitration_tab_shows_scores_winner_and_why(session) -> None:
    rows = session["rows"]
    assert rows and rows[0]["choice"] in ("recovered", "initial") and rows[0]["reason"]
    scores = rows[0]["scores"]
    assert scores["recovered"]["mse_norm"] is not None and scores["initial"]["mse_norm"] is not None
    assert "arbitration" in session["summary"]
    x0, y0, x1, y1 = session["regions_arbitration"]["arbitration_table"]
    assert x1 - x0 > 400 and y1 - y0 > 40


def test_choose_arbitration_overrules_one_view_and_is_logged(session) -> None:
    after = session["arb_after"]
    assert after["choice"] == session["other"]
    assert after.get("manual_choice") == session["other"]
    logged = [d for d in session["decisions"] if d["action"] == "choose_arbitration"]
    assert logged and logged[-1]["choice"] == session["other"]
    assert any(d["action"] == "apply_cell" and d["cell"] == session["cell"] for d in session["decisions"])


def test_pose_accuracy_now_and_at_the_start(session) -> None:
    rows = session["accuracy_rows"]
    assert len(rows) == 5 and all(np.isfinite(r[1:]).all() for r in rows)
    for text in (session["accuracy_headline"], session["accuracy_line"]):
        assert "Rot@5" in text and "Rot@15" in text and "CC@0.1" in text and "->" in text
    for name in ("accuracy_rot_plot", "accuracy_centre_plot"):
        x0, y0, x1, y1 = session["regions_accuracy"][name]
        assert x1 - x0 > 200 and y1 - y0 > 100


def test_losses_are_unweighted_and_labelled(session) -> None:
    from gui.panels.controls import unweighted_losses

    assert "unweighted" in session["loss_title"]
    expected = unweighted_losses(session["history"], session["recon_iters"], True)
    assert np.allclose(session["losses"]["rgb"], expected["rgb"])
    steps = np.asarray(session["history"]["step"])
    raw = np.asarray(session["history"]["rgb"])
    assert np.allclose(np.asarray(session["losses"]["rgb"]) * steps / session["recon_iters"], raw)


def test_seed_field_follows_a_scripted_reset(session) -> None:
    assert session["seed_field"] == 7


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_layout_follows_the_viewport(session, size) -> None:
    from gui.app import LAYOUT, VIEWPORT, orbit_view_size

    applied, layout, regions, client, orbit = session[f"size_{size[0]}"]
    assert applied == size and client == size
    for name, (x, y, w, h) in layout.items():
        rx, ry, rw, rh = LAYOUT[name]
        assert abs(w / size[0] - rw / VIEWPORT[0]) < 0.01 and abs(h / size[1] - rh / VIEWPORT[1]) < 0.01, name
        x0, y0, x1, y1 = regions[name if name != "overlays" else "overlays"]
        assert (x0, y0) == (x, y) and abs((x1 - x0) - w) <= 1 and abs((y1 - y0) - h) <= 1, (name, regions[name])
    assert sum(layout[n][2] for n in ("orbit", "controls", "scores")) == size[0]
    assert layout["overlays"][1] + layout["overlays"][3] == size[1]
    # the orbit view follows its window: render, texture and drawing at the new size, a frame on display
    side = orbit_view_size(layout, 512)
    _, _, w, h = layout["orbit"]
    assert orbit["size"] == side and side <= w - 20 and side <= h - 150
    assert orbit["renderer"] == (side, side) and orbit["texture"] == (side, side, 3) and orbit["drawlist"] == side
    assert orbit["shown"] and orbit["darkest"] < 0.9
    assert orbit["legend_right"] <= side
