import numpy as np
from PIL import Image

from covidct.report.figures import roc_figure


def test_roc_figure_draws_one_line_per_curve_and_saves_png(tmp_path):
    curves = {"a": (np.array([0, 0.5, 1.0]), np.array([0, 0.9, 1.0])), "b": (np.array([0, 1.0]), np.array([0, 1.0]))}
    fig = roc_figure(curves, "test")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    fig.savefig(tmp_path / "roc.png")
    assert Image.open(tmp_path / "roc.png").size[0] > 100
