"""SparseAGS Studio engine: sparse-view pose estimation and 3D reconstruction by analysis-by-generative-synthesis."""
