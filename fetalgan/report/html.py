"""The report page: its layout arithmetic (the sample grids' display widths), images as data
URIs, and the rendering of ``fetalgan/templates/report.html`` (Jinja, every value escaped)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from fetalgan.report.tables import fmt

SAMPLES_WIDTH = 560  # display width (px) of the wider sample grid, at most 3x its own size
FIGURES = ("curves", "schedules", "hyperparams", "best_samples", "real_samples")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def sample_display_widths(pngs: dict[str, Path]) -> dict[str, int]:
    """Display widths of the synthetic and real sample grids, both at one scale, so a
    synthetic image and a real one look the same size."""
    sample_widths = {k: _png_width(pngs[k]) for k in ("best_samples", "real_samples") if k in pngs}
    scale = min(3.0, SAMPLES_WIDTH / max(sample_widths.values())) if sample_widths else 1.0
    return {k: round(w * scale) for k, w in sample_widths.items()}


def figure_uris(pngs: dict[str, Path]) -> dict[str, str | None]:
    """Each figure the page may show, as a data URI (None when not drawn)."""
    return {k: data_uri(pngs[k]) if k in pngs else None for k in FIGURES}


def render_html(context: dict) -> str:
    """The report page (``fetalgan/templates/report.html``, read from the installed package)
    from ``context`` (see :func:`fetalgan.report.write_report`), every value escaped."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fetalgan", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["fmt"] = fmt
    return env.get_template("report.html").render(**context)


def when(ms: int | None) -> str:
    """A run's time (ms since the epoch) as local date and time; '' when unknown."""
    return "" if not ms else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _png_width(path: Path) -> int:
    from fetalgan.images import read_grey

    return int(read_grey(path).shape[1])
