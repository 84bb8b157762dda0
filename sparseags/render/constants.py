"""Compositing rules shared by every backend (docs/ARCHITECTURE.md, "Renderer")."""

TILE_SIZE = 16  # pixels per tile side (cpu backend and the torch baseline)
MAX_ALPHA = 0.99  # alpha = min(MAX_ALPHA, opacity · g)
MIN_ALPHA = 1.0 / 255.0  # fragments with smaller alpha are skipped
MIN_TRANSMITTANCE = 1e-4  # a pixel stops before the fragment that would bring T below this
MAX_MAHALANOBIS_HALF = 4.5  # ½ dᵀ Σ⁻¹ d ≤ 4.5  <=>  inside the 3σ ellipse
