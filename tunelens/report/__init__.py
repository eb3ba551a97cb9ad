"""Self-contained HTML pages from the Jinja2 templates in report/templates (inline CSS/JS, no CDN)."""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda value, digits=1: "-" if value is None else f"{100 * value:.{digits}f}%"
    return env


def render_html(template_name: str, **context) -> str:
    """Render one template; everything it needs must be inlined (data, CSS, JS, images as data: URIs)."""
    return _environment().get_template(template_name).render(**context)


def png_data_uri(png_bytes: bytes) -> str:
    """Inline a PNG (e.g. a matplotlib figure) so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def new_figure(width: float = 6.0, height: float = 3.2):
    """A matplotlib Figure that needs no pyplot and no backend switch (nothing global is touched)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def figure_png(fig) -> bytes:
    import io

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
