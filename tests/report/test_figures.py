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


def test_heatmap_overlay_colours_only_where_the_map_is_on():
    from covidct.report.figures import heatmap_overlay

    hu = np.full((32, 32), -800.0)
    heat = np.zeros((32, 32))
    heat[10:20, 10:20] = 1.0
    rgb = heatmap_overlay(hu, heat, np.zeros((32, 32), np.uint8), is_hu=True)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    gray = rgb[0, 0]
    assert gray[0] == gray[1] == gray[2]  # untouched pixels stay gray
    assert len(set(rgb[15, 15].tolist())) > 1  # the hot spot is coloured


def test_overview_3d_draws_a_mesh_per_present_structure():
    from covidct.report.figures import overview_3d

    labels = np.zeros((12, 24, 24), np.uint8)
    labels[2:10, 4:20, 3:11] = 1
    labels[2:10, 4:20, 13:21] = 2
    infected = np.zeros(labels.shape, bool)
    fig = overview_3d(labels, infected, (2.0, 1.0, 1.0))
    assert len(fig.axes[0].collections) == 1  # lungs only: no infection mesh
    infected[4:8, 8:14, 4:9] = True
    assert len(overview_3d(labels, infected, (2.0, 1.0, 1.0)).axes[0].collections) == 2


def test_lesion_overlay_colours_each_type_and_leaves_the_rest_gray():
    from covidct.report import figures

    slice_ = np.full((64, 64), -800.0, np.float32)
    lesions = np.zeros((64, 64), np.uint8)
    lesions[10:20, 10:20] = 1
    lesions[40:50, 40:50] = 2
    rgb = figures.lesion_overlay(slice_, lesions, np.zeros((64, 64), np.uint8), is_hu=True)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    gray = rgb[30, 30]
    assert gray[0] == gray[1] == gray[2]
    ground_glass, consolidation = rgb[15, 15].astype(int), rgb[45, 45].astype(int)
    assert ground_glass[1] > gray[1] + 40 and ground_glass[2] < gray[2]  # yellow: green up, blue down
    assert consolidation[0] > consolidation[1] + 60  # red
