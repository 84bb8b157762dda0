"""SparseAGS Studio debugger front end.

`gui.orbit` (orbit camera) and `gui.splat_view` (offscreen GLSL splat renderer) never import
DearPyGui, so they run headless and in tests; the DearPyGui app builds on them.
"""
