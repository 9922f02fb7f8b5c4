"""A seeded procedural fetal-head ultrasound phantom, so demos, tests and benchmarks need no download.

Each image is formed the way a curvilinear scanner forms one: an echogenicity map (maternal
wall, uterine tissue, amniotic fluid, scalp, skull, midline, cavum septi pellucidi, thalami,
choroid plexus, Sylvian fissures) is sampled on the beam grid (depth x angle), shadowed behind
the skull, attenuated with depth, multiplied by correlated speckle, log-compressed, and
scan-converted (bilinear) into a fan-shaped sector whose apex is at the top centre.

Image ``i`` depends only on ``(seed, i, size)``: its random numbers come from
``np.random.default_rng([seed, i])`` and the anatomy is drawn before any pixel noise, so the
same head appears at every size. Images are rendered in batches with elementwise numpy and
per-line scipy filters only (no reductions across images, no BLAS), so an image's bytes do not
depend on which batch it was rendered in. Geometry is in image units: the image spans
[0, 1] x [0, 1], x to the right, y downwards.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

VERSION = 1  # bump when the rendering changes: cached phantom tensors carry it in their key
_SPECKLE_SIGMA_256 = (0.9, 2.2)  # speckle grain at 256 px: (axial, lateral) sigma in beam-grid px
_SPECKLE_SIGMA_MIN = 0.6  # a finer grain than this is averaged within a pixel: lower contrast
_FIELD_GRID = 64  # smooth random fields are evaluated on at most this many points per axis


# --------------------------------------------------------------------------------------------
# Random anatomy and acquisition settings of one image
# --------------------------------------------------------------------------------------------


def _draw(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Everything about one image except its pixel noise; values are float32 arrays."""
    u = rng.uniform
    p: dict[str, object] = {}
    # probe and sector
    p["r0"] = u(0.07, 0.15)  # radius of the probe face (curvilinear probe)
    p["apex_y"] = -p["r0"] + u(0.0, 0.03)  # virtual apex just above the image
    p["half_angle"] = u(0.58, 0.72)  # radians
    p["r_max"] = u(0.95, 1.15) - p["apex_y"]  # far end of the beams
    p["dynamic_range"] = u(42.0, 52.0)  # dB between black and white
    p["gain_db"] = u(-3.0, 3.0)
    p["atten"] = u(0.8, 1.6)  # net loss with depth after TGC, in quarters of the dynamic range
    p["lateral_falloff"] = u(0.15, 0.35)  # darker beam edges
    # head: an ellipse with the midline along its major axis
    p["cx"], p["cy"] = 0.5 + u(-0.08, 0.08), u(0.44, 0.58)
    p["a"] = u(0.19, 0.32)  # semi-major axis (occipito-frontal)
    p["b"] = p["a"] * u(0.74, 0.86)  # semi-minor axis (biparietal)
    p["phi"] = u(-np.pi / 2, np.pi / 2)  # direction of the midline
    p["front"] = rng.choice([-1.0, 1.0])  # which end of the midline is frontal
    p["skull_t"] = u(0.0045, 0.008)  # skull half-thickness
    p["skull_amp"], p["skull_phase"] = u(0.1, 0.3, 2), u(0, 2 * np.pi, 2)  # brightness along ring
    p["shadow"] = u(0.4, 0.9)  # optical depth behind one skull crossing
    p["halo_w"], p["halo_phase"] = u(0.02, 0.07), u(0, 2 * np.pi)  # amniotic fluid round the head
    p["brain_grey"], p["tissue_grey"] = u(0.28, 0.38), u(0.4, 0.55)
    p["wall_depth"] = u(0.08, 0.2)  # maternal abdominal and uterine wall under the probe
    p["wall_pos"], p["wall_grey"], p["wall_w"] = u(0.1, 1.0, 4), u(-0.3, 0.35, 4), u(0.04, 0.12, 4)
    p["fluid_level"] = u(-1.2, -0.2)  # how much of the surroundings is fluid
    p["choroid"] = float(u() < 0.7)  # choroid plexus visible (trans-ventricular-like plane)
    p["thal_grey"], p["csp_len"] = u(0.1, 0.18), u(0.07, 0.11)
    for name, waves, freq in (
        ("tissue", 8, (1.0, 4.0)),
        ("fluid", 6, (0.8, 2.5)),
        ("brain", 8, (3.0, 8.0)),
    ):
        angle = u(0, 2 * np.pi, waves)
        radius = u(*freq, waves) * 2 * np.pi
        p[f"{name}_kx"], p[f"{name}_ky"] = radius * np.cos(angle), radius * np.sin(angle)
        p[f"{name}_phase"] = u(0, 2 * np.pi, waves)
    return {k: np.asarray(v, dtype=np.float32) for k, v in p.items()}


def _stack(params: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-image parameters -> batch arrays: scalars (B, 1, 1), vectors (B, K)."""
    out = {}
    for key in params[0]:
        arr = np.stack([p[key] for p in params])
        out[key] = arr[:, None, None] if arr.ndim == 1 else arr
    return out


# --------------------------------------------------------------------------------------------
# Rendering helpers (elementwise, float32)
# --------------------------------------------------------------------------------------------


def _smoothstep(edge0, edge1, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _line(offset: np.ndarray, sigma, pixel: float) -> np.ndarray:
    """A thin bright line across ``offset`` = 0, band-limited to the pixel size (no aliasing):
    its width never drops below half a pixel, and a widened line gets dimmer to keep its energy."""
    wide = np.sqrt(sigma * sigma + np.float32((0.5 * pixel) ** 2))
    return (sigma / wide) * np.exp(-0.5 * (offset / wide) ** 2)


def _field(p: dict, name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth random field (sum of plane waves, about N(0, 1)) at points ``x, y`` (B, H, W)."""
    kx, ky, phase = p[f"{name}_kx"], p[f"{name}_ky"], p[f"{name}_phase"]
    out = np.zeros_like(x)
    for k in range(kx.shape[1]):
        out += np.cos(kx[:, k, None, None] * x + ky[:, k, None, None] * y + phase[:, k, None, None])
    return out * np.float32(np.sqrt(2.0 / kx.shape[1]))


def _upsample(coarse: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of cell-centred ``(B, m, m)`` samples to ``(B, n, n)``, elementwise."""
    m = coarse.shape[1]
    if m == n:
        return coarse
    pos = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0, m - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, m - 1)
    w = (pos - i0).astype(np.float32)
    rows = coarse[:, i0, :] * (1 - w)[None, :, None] + coarse[:, i1, :] * w[None, :, None]
    return rows[:, :, i0] * (1 - w)[None, None, :] + rows[:, :, i1] * w[None, None, :]


def _speckle_norm(sigma: list[float]) -> float:
    """Variance of white N(0, 1) noise after a separable Gaussian filter with these sigmas."""
    var = 1.0
    for s in sigma:
        radius = int(4.0 * s + 0.5)  # scipy's default truncate=4.0
        k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / s) ** 2)
        var *= float(np.sum((k / k.sum()) ** 2))
    return var


def _render(p: dict[str, np.ndarray], noise: np.ndarray, size: int) -> np.ndarray:
    """Render a batch: parameters from ``_stack``, noise ``(B, 4, size, size)`` -> (B, size, size) uint8."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    n = size
    pixel = 1.0 / size
    r0, r_max, half_angle = p["r0"], p["r_max"], p["half_angle"]
    dyn = p["dynamic_range"]

    def amp(grey):  # display grey in [0, 1] -> echo amplitude (inverse of the log compression)
        return np.power(np.float32(10.0), (grey - np.float32(1.0)) * dyn / 20.0)

    # ---- beam grid: depth (rows) x angle (columns), at full and at field resolution ----------
    def beam_grid(m):
        frac = (np.arange(m, dtype=np.float32) + 0.5) / m
        r = r0 + (r_max - r0) * frac[None, :, None]
        theta = -half_angle + 2 * half_angle * frac[None, None, :]
        return r, theta, 0.5 + r * np.sin(theta), p["apex_y"] + r * np.cos(theta)

    r, theta, x, y = beam_grid(n)
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    m = min(n, _FIELD_GRID)
    _, _, xc, yc = beam_grid(m)
    tissue_f = _upsample(_field(p, "tissue", xc, yc), n)
    wall_f = _upsample(_field(p, "tissue", 2 * xc, 3 * yc), n)
    fluid_f = _upsample(_field(p, "fluid", xc, yc), n)
    brain_f = _upsample(_field(p, "brain", xc, yc), n)

    # ---- surroundings: maternal wall bands, uterine tissue, amniotic fluid -------------------
    tissue = amp(np.clip(p["tissue_grey"] + 0.12 * tissue_f, 0.05, 0.95))
    z = (r - r0) / p["wall_depth"]  # 0..1 across the wall
    wall_grey = 0.42 + 0.08 * wall_f
    for k in range(p["wall_pos"].shape[1]):
        pos, grey, width = (p[key][:, k, None, None] for key in ("wall_pos", "wall_grey", "wall_w"))
        wall_grey = wall_grey + grey * np.exp(-0.5 * ((z - pos) / width) ** 2)
    in_wall = 1 - _smoothstep(p["wall_depth"] - 0.02, p["wall_depth"] + 0.02, r - r0)
    echo = tissue + (amp(np.clip(wall_grey, 0.0, 1.0)) - tissue) * in_wall
    level = p["fluid_level"]
    fluid = _smoothstep(level + 0.12, level - 0.12, fluid_f) * (1 - in_wall)
    echo = echo * (1 - fluid * (1 - amp(0.0)))

    # ---- head, in its own frame: u along the midline, v across it ---------------------------
    a, b, cphi, sphi = p["a"], p["b"], np.cos(p["phi"]), np.sin(p["phi"])
    dx, dy = x - p["cx"], y - p["cy"]
    u = dx * cphi + dy * sphi
    v = -dx * sphi + dy * cphi
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    dist = (rho - 1) * (a + b) / 2  # about the signed distance to the skull
    psi = np.arctan2(v / b, u / a)
    skull_t = p["skull_t"]
    halo_w = p["halo_w"] * (1.3 + 0.7 * np.sin(2 * psi + p["halo_phase"]))
    halo = _smoothstep(0.0, 0.01, dist) * (1 - _smoothstep(0.6, 1.0, dist / halo_w))
    echo = echo * (1 - halo * (1 - amp(0.03)))
    echo = echo + amp(0.5) * _line(dist - 2.2 * skull_t, skull_t, pixel)  # scalp
    inside = 1 - _smoothstep(-2 * skull_t, -skull_t, dist)

    brain = amp(np.clip(p["brain_grey"] + 0.08 * brain_f, 0.0, 1.0))
    us, vs = u * p["front"] / a, v / b  # us: -1 occipital .. +1 frontal
    # cavum septi pellucidi: a small fluid box on the midline, frontal side, with bright walls
    csp_len = p["csp_len"]
    along_csp = np.abs(us - 0.3)
    csp = (1 - _smoothstep(csp_len - 0.03, csp_len, along_csp)) * (
        1 - _smoothstep(0.02, 0.035, np.abs(vs))
    )
    csp_walls = _line(np.abs(v) - 0.035 * b, 0.006 * b, pixel) * (
        1 - _smoothstep(csp_len - 0.01, csp_len + 0.01, along_csp)
    )
    inner = p.get("inner")  # off the mid-plane (slice != 0) the deep structures fade
    if inner is not None:
        csp, csp_walls = csp * inner, csp_walls * inner
    # midline (falx), brighter where the beam meets it head-on, interrupted by the cavum
    beam_v = np.abs(-sphi * sin_t + cphi * cos_t)
    midline = (
        _line(v, np.float32(0.0035), pixel) * (1 - _smoothstep(0.82, 0.92, np.abs(us))) * (1 - csp)
    )
    brain = brain + amp(0.72) * (0.35 + 0.65 * beam_v) * midline
    brain = brain * (1 - csp * (1 - amp(0.05))) + amp(0.6) * csp_walls
    for side in (-1.0, 1.0):
        # thalami: hypoechoic ovals either side of the midline, behind the cavum
        thal = _smoothstep(1.0, 0.7, np.hypot((us + 0.02) / 0.17, (vs - side * 0.17) / 0.13))
        thal = thal if inner is None else thal * inner
        brain = brain + (amp(p["thal_grey"]) - brain) * thal
        # Sylvian fissure: a short bright curve towards each side of the head
        syl = _line(np.abs(vs - side * (0.62 - 0.25 * us * us)) * b, 0.025 * b, pixel)
        brain = brain + amp(0.55) * syl * (1 - _smoothstep(0.2, 0.45, np.abs(us + 0.05)))
        # choroid plexus: bright blobs in the posterior horns of the lateral ventricles
        plex = p["choroid"] * _smoothstep(
            1.0, 0.6, np.hypot((us + 0.5) / 0.13, (vs - side * 0.32) / 0.08)
        )
        plex = plex if inner is None else plex * inner
        brain = brain + (amp(0.78) - brain) * plex
    brain = brain + amp(0.42) * _line((rho - 0.93) * a, 0.02 * a, pixel)  # brain surface
    echo = echo + (brain - echo) * inside

    # ---- skull: bright where the beam meets it head-on, shadow behind it --------------------
    gu, gv = u / (a * a), v / (b * b)  # ellipse normal, head frame
    nx, ny = gu * cphi - gv * sphi, gu * sphi + gv * cphi
    incidence = np.abs(nx * sin_t + ny * cos_t) / (np.hypot(nx, ny) + np.float32(1e-6))
    k_amp, k_phase = p["skull_amp"], p["skull_phase"]
    along = 1 + k_amp[:, 0, None, None] * np.sin(3 * psi + k_phase[:, 0, None, None])
    along = along + k_amp[:, 1, None, None] * np.sin(5 * psi + k_phase[:, 1, None, None])
    skull = (
        amp(1.15)
        * _line(dist + 0.3 * skull_t, skull_t, pixel)
        * (0.04 + 0.96 * incidence**4)
        * along
    )
    echo = echo + skull
    optical = np.cumsum(skull / amp(1.15), axis=1) * ((r_max - r0) / n / (2.5 * skull_t))
    echo = echo * np.exp(-p["shadow"] * optical)

    # ---- depth attenuation after TGC, darker beam edges --------------------------------------
    depth = (r - r0) / (r_max - r0)
    gain = np.power(np.float32(10.0), (p["gain_db"] - p["atten"] * depth * dyn / 4) / 20)
    echo = echo * gain * (1 - p["lateral_falloff"] * (theta / half_angle) ** 6)

    # ---- speckle: correlated complex field -> Rayleigh amplitude; finer than a pixel -> less contrast
    sigma = [s * size / 256 for s in _SPECKLE_SIGMA_256]
    contrast = np.float32(np.sqrt(np.prod([min(1.0, s / _SPECKLE_SIGMA_MIN) for s in sigma])))
    sigma = [max(s, _SPECKLE_SIGMA_MIN) for s in sigma]
    re = gaussian_filter(noise[:, 0], [0, *sigma], mode="wrap")
    im = gaussian_filter(noise[:, 1], [0, *sigma], mode="wrap")
    intensity = (re * re + im * im) * np.float32(1 / (2 * _speckle_norm(sigma)))  # mean 1
    specular = np.clip(skull / amp(1.0), 0.0, 1.0)  # bone reflects like a mirror: less speckle
    intensity = np.maximum(1 + contrast * (1 - 0.7 * specular) * (intensity - 1), 0.01)
    floor = amp(-0.06) * np.hypot(noise[:, 2], noise[:, 3])  # electronic noise
    envelope = echo * np.sqrt(intensity) + floor

    # ---- log compression, scan conversion into the fan, slight blur ---------------------------
    grey = np.clip(1 + 20 * np.log10(envelope + np.float32(1e-6)) / dyn, 0.0, 1.0)
    pix = (np.arange(size, dtype=np.float32) + 0.5) / size
    px, py = pix[None, None, :] - 0.5, pix[None, :, None] - p["apex_y"]
    rows = (np.hypot(px, py) - r0) / (r_max - r0) * n - 0.5
    cols = (np.arctan2(px, py) + half_angle) / (2 * half_angle) * n - 0.5
    batch = np.broadcast_to(np.arange(len(grey), dtype=np.float32)[:, None, None], rows.shape)
    image = map_coordinates(grey, [batch, rows, cols], order=1, mode="grid-constant", cval=0.0)
    image = gaussian_filter(image, [0, 0.4 * max(1.0, size / 256), 0.4 * max(1.0, size / 256)])
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# The same heads as T2-weighted MR, and slices off the mid-plane
# --------------------------------------------------------------------------------------------


def _at_slice(p: dict[str, np.ndarray], z: float) -> dict[str, np.ndarray]:
    """The head cut at ``z`` (fraction of its half-height, -1..1; 0 = the drawn plane): the
    skull ellipse shrinks as an ellipsoid's section does, deep structures (cavum, thalami,
    choroid plexus) fade with ``inner`` = exp(-(z / 0.35)^2)."""
    scale = np.float32(np.sqrt(max(1.0 - z * z, 0.04)))
    return p | {
        "a": p["a"] * scale,
        "b": p["b"] * scale,
        "inner": np.asarray(np.exp(-((z / 0.35) ** 2)), dtype=np.float32),
    }


def _draw_mri(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """MR acquisition of one image (its own random stream, so the anatomy stays the US one's)."""
    u = rng.uniform
    p = {
        "noise_sigma": u(0.015, 0.035),  # Rician noise, fraction of full scale
        "bias_gx": u(-0.25, 0.25),  # bias field: linear gradient across the image...
        "bias_gy": u(-0.25, 0.25),
        "bias_r": u(0.0, 0.25),  # ...and a smooth bump (surface-coil sensitivity)
        "bias_cx": u(0.2, 0.8),
        "bias_cy": u(0.2, 0.8),
        "contrast": u(0.9, 1.1),  # T2 weighting: spread of the grey levels
    }
    return {k: np.asarray(v, dtype=np.float32) for k, v in p.items()}


def _render_mri(p: dict[str, np.ndarray], noise: np.ndarray, size: int) -> np.ndarray:
    """The anatomy of ``_render`` as a T2-weighted slice: bright fluid (amniotic fluid, CSF,
    cavum, ventricles), grey brain, darker thalami, dark skull and choroid plexus; no fan, no
    speckle; a smooth multiplicative bias field and Rician noise. ``(B, size, size) uint8``."""
    from scipy.ndimage import gaussian_filter

    n = size
    pixel = 1.0 / size
    pix = (np.arange(n, dtype=np.float32) + 0.5) / n
    x = np.broadcast_to(pix[None, None, :], (len(noise), n, n))
    y = np.broadcast_to(pix[None, :, None], (len(noise), n, n))
    r = np.hypot(x - 0.5, y - p["apex_y"])  # distance from the US probe: the wall is under it
    r0 = p["r0"]
    m = min(n, _FIELD_GRID)
    cell = (np.arange(m, dtype=np.float32) + 0.5) / m
    xc = np.broadcast_to(cell[None, None, :], (len(noise), m, m))
    yc = np.broadcast_to(cell[None, :, None], (len(noise), m, m))
    tissue_f = _upsample(_field(p, "tissue", xc, yc), n)
    wall_f = _upsample(_field(p, "tissue", 2 * xc, 3 * yc), n)
    fluid_f = _upsample(_field(p, "fluid", xc, yc), n)
    brain_f = _upsample(_field(p, "brain", xc, yc), n)

    # surroundings: uterine tissue (dark-grey), maternal wall (fat bands brighter), fluid bright
    grey = np.clip(0.3 + 0.06 * tissue_f, 0.0, 1.0)
    z = (r - r0) / p["wall_depth"]
    wall = 0.4 + 0.05 * wall_f
    for k in range(p["wall_pos"].shape[1]):
        pos, g, width = (p[key][:, k, None, None] for key in ("wall_pos", "wall_grey", "wall_w"))
        wall = wall + 0.6 * g * np.exp(-0.5 * ((z - pos) / width) ** 2)
    in_wall = 1 - _smoothstep(p["wall_depth"] - 0.02, p["wall_depth"] + 0.02, r - r0)
    grey = grey + (np.clip(wall, 0.05, 0.9) - grey) * in_wall
    level = p["fluid_level"]
    fluid = _smoothstep(level + 0.12, level - 0.12, fluid_f) * (1 - in_wall)
    grey = grey + (0.88 - grey) * fluid

    # head, in its own frame (as in _render)
    a, b, cphi, sphi = p["a"], p["b"], np.cos(p["phi"]), np.sin(p["phi"])
    dx, dy = x - p["cx"], y - p["cy"]
    u = dx * cphi + dy * sphi
    v = -dx * sphi + dy * cphi
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    dist = (rho - 1) * (a + b) / 2
    psi = np.arctan2(v / b, u / a)
    skull_t = p["skull_t"]
    halo_w = p["halo_w"] * (1.3 + 0.7 * np.sin(2 * psi + p["halo_phase"]))
    halo = _smoothstep(0.0, 0.01, dist) * (1 - _smoothstep(0.6, 1.0, dist / halo_w))
    grey = grey + (0.9 - grey) * halo  # amniotic fluid round the head
    scalp = np.clip(_line(dist - 2.2 * skull_t, 1.5 * skull_t, pixel), 0, 1)
    grey = grey + (0.45 - grey) * scalp
    inside = 1 - _smoothstep(-2 * skull_t, -skull_t, dist)
    inner = p.get("inner", np.float32(1.0))

    brain = np.clip(0.48 + 0.1 * (p["brain_grey"] - 0.33) / 0.05 * 0.3 + 0.04 * brain_f, 0, 1)
    us, vs = u * p["front"] / a, v / b
    csp_len = p["csp_len"]
    along_csp = np.abs(us - 0.3)
    csp = (1 - _smoothstep(csp_len - 0.03, csp_len, along_csp)) * (
        1 - _smoothstep(0.02, 0.035, np.abs(vs))
    )
    csp = csp * inner
    falx = _line(v, np.float32(0.0035), pixel) * (1 - _smoothstep(0.82, 0.92, np.abs(us)))
    brain = brain + (0.2 - brain) * np.clip(falx * (1 - csp), 0, 1)  # dark falx
    brain = brain + (0.9 - brain) * csp
    for side in (-1.0, 1.0):
        thal = _smoothstep(1.0, 0.7, np.hypot((us + 0.02) / 0.17, (vs - side * 0.17) / 0.13))
        brain = brain + (0.32 + 0.5 * p["thal_grey"] - brain) * thal * inner
        syl = _line(np.abs(vs - side * (0.62 - 0.25 * us * us)) * b, 0.025 * b, pixel)
        syl = syl * (1 - _smoothstep(0.2, 0.45, np.abs(us + 0.05)))
        brain = brain + (0.85 - brain) * np.clip(syl, 0, 1)  # CSF in the fissure
        # lateral ventricle (posterior horn, CSF) holding the choroid plexus (dark on T2)
        horn = _smoothstep(1.0, 0.7, np.hypot((us + 0.45) / 0.2, (vs - side * 0.3) / 0.11))
        brain = brain + (0.85 - brain) * horn * inner
        plex = p["choroid"] * _smoothstep(
            1.0, 0.6, np.hypot((us + 0.5) / 0.13, (vs - side * 0.32) / 0.08)
        )
        brain = brain + (0.22 - brain) * plex * inner
    csf = _smoothstep(0.89, 0.93, rho)  # extra-axial CSF between brain surface and skull
    brain = brain + (0.88 - brain) * csf
    grey = grey + (brain - grey) * inside
    skull = np.clip(_line(dist + 0.3 * skull_t, skull_t, pixel), 0, 1)
    grey = grey + (0.06 - grey) * skull  # cortical bone: no T2 signal

    # acquisition: contrast, smooth bias field, Rician noise, the scanner's slight blur
    grey = np.clip(0.5 + p["contrast"] * (grey - 0.5), 0.0, 1.0)
    bias = np.exp(
        p["bias_gx"] * (x - 0.5)
        + p["bias_gy"] * (y - 0.5)
        + p["bias_r"] * np.exp(-((x - p["bias_cx"]) ** 2 + (y - p["bias_cy"]) ** 2) / 0.18)
    )
    grey = gaussian_filter(grey * bias, [0, 0.5 * max(1.0, n / 256), 0.5 * max(1.0, n / 256)])
    sigma = p["noise_sigma"]
    grey = np.hypot(grey + sigma * noise[:, 0], sigma * noise[:, 1])
    return np.clip(grey * 255 + 0.5, 0, 255).astype(np.uint8)


MODALITIES = ("us", "mri")


def slice_position(seed: int, index: int, slice_range: float) -> float:
    """The slice of pool image ``index`` through its 3D head: uniform in
    ``[-slice_range, slice_range]`` (fraction of the head's half-height) from its own stream of
    ``(seed, index)``; 0 for every image when ``slice_range`` is 0 (the drawn mid-plane)."""
    if slice_range == 0:
        return 0.0
    return float(np.random.default_rng([seed, index, 3]).uniform(-slice_range, slice_range))


def phantom_images(
    indices: list[int],
    size: int,
    seed: int,
    *,
    modality: str = "us",
    slices: Sequence[float] | None = None,
) -> np.ndarray:
    """Phantom images ``indices`` of the ``seed`` pool, ``(len(indices), size, size) uint8``.

    ``modality`` ``us`` (ultrasound) or ``mri`` (T2-weighted MR of the same head: both come from
    one ``(seed, index)``, so they are a paired ground truth). ``slices``: one slice position
    per index through the 3D head (see :func:`_at_slice`; None = the mid-plane, 0). Renders
    them in one batch (memory ~160 bytes a pixel); ``iter_phantom_images`` chunks.
    """
    _check(min(indices, default=0), size, seed)
    if modality not in MODALITIES:
        raise ValueError(
            f"phantom modality: expected one of {', '.join(MODALITIES)}, got {modality!r}"
        )
    if slices is not None and len(slices) != len(indices):
        raise ValueError(f"phantom slices: {len(slices)} positions for {len(indices)} indices")
    if not indices:
        return np.empty((0, size, size), dtype=np.uint8)
    params, noise = [], np.empty((len(indices), 4, size, size), dtype=np.float32)
    for j, index in enumerate(indices):
        rng = np.random.default_rng([seed, index])
        anatomy = _draw(rng)  # anatomy first: the same head at every size and modality
        if slices is not None:
            anatomy = _at_slice(anatomy, float(slices[j]))
        if modality == "mri":
            anatomy |= _draw_mri(np.random.default_rng([seed, index, 1]))
        params.append(anatomy)
        noise[j] = rng.standard_normal((4, size, size), dtype=np.float32)
    render = _render_mri if modality == "mri" else _render
    return render(_stack(params), noise, size)


def _check(n: int, size: int, seed: int) -> None:
    if n < 0:
        raise ValueError(f"phantom n (or index): must be >= 0, got {n}")
    if size < 16:
        raise ValueError(f"phantom size: must be >= 16 pixels, got {size}")
    if seed < 0:
        raise ValueError(f"phantom seed: must be >= 0, got {seed}")


def _batch_size(size: int) -> int:
    return max(1, min(64, 2**21 // (size * size)))  # ~40 float32 maps of 2M pixels: ~0.3 GB


def iter_phantom_images(
    indices: Sequence[int],
    size: int,
    seed: int,
    *,
    modality: str = "us",
    slices: Sequence[float] | None = None,
) -> Iterator[np.ndarray]:
    """Phantom images ``indices`` in order, as consecutive ``(b, size, size) uint8`` batches
    (``modality`` and ``slices`` as :func:`phantom_images`).

    Batches render on a few threads (numpy releases the GIL); the bytes do not depend on it.
    """
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    indices = list(indices)
    step = _batch_size(size)
    chunks = [indices[i : i + step] for i in range(0, len(indices), step)]
    slice_chunks = (
        [None] * len(chunks)
        if slices is None
        else [list(slices)[i : i + step] for i in range(0, len(indices), step)]
    )
    render = {
        id(c): partial(phantom_images, modality=modality, slices=z)
        for c, z in zip(chunks, slice_chunks, strict=True)
    }
    workers = max(
        1,
        min(
            4,
            len(chunks),
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1,
        ),
    )
    if workers == 1:
        yield from (render[id(chunk)](chunk, size, seed) for chunk in chunks)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        todo = iter(chunks)  # at most 2 x workers batches in flight: memory stays bounded
        pending = deque(
            pool.submit(render[id(c)], c, size, seed) for c in islice(todo, 2 * workers)
        )
        while pending:
            batch = pending.popleft().result()
            following = next(todo, None)
            if following is not None:
                pending.append(pool.submit(render[id(following)], following, size, seed))
            yield batch


def make_phantom(n: int, size: int, seed: int, *, modality: str = "us") -> np.ndarray:
    """``n`` phantom images, ``(n, size, size) uint8``; image ``i`` depends only on (seed, i, size)
    and the modality (``us``, ``mri``: the same heads)."""
    _check(n, size, seed)
    out = np.empty((n, size, size), dtype=np.uint8)
    start = 0
    for batch in iter_phantom_images(range(n), size, seed, modality=modality):
        out[start : start + len(batch)] = batch
        start += len(batch)
    return out


def write_phantom_dir(
    out: str | Path,
    *,
    n: int,
    size: int,
    seed: int = 0,
    progress: bool = True,
    modality: str = "us",
    first: int = 0,
) -> list[Path]:
    """Write phantoms ``first .. first + n - 1`` as 8-bit grey ``out/phantom_NNNNN.png``;
    return the paths. The same ``seed`` gives byte-identical files; image ``i`` is
    ``make_phantom(first + n, size, seed, modality=modality)[i]``, and ``--modality us`` and
    ``mri`` of one seed are the same heads under the same names (a paired ground truth).
    """
    from tqdm import tqdm

    from fetalgan.images import write_png

    _check(min(n, first), size, seed)
    if modality not in MODALITIES:
        raise ValueError(f"--modality: expected one of {', '.join(MODALITIES)}, got {modality!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with tqdm(
        total=n, desc=f"phantom {modality}", unit="img", disable=None if progress else True
    ) as bar:
        for batch in iter_phantom_images(range(first, first + n), size, seed, modality=modality):
            for image in batch:
                path = out / f"phantom_{first + len(paths):05d}.png"
                write_png(image, path)
                paths.append(path)
            bar.update(len(batch))
    return paths
