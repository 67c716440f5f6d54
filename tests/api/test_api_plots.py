"""Plot endpoints: images of the right type and size, owner only, clear 4xx when there is nothing to draw;
`thrifty-nas jobs plots` saving them through the API."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
import typer
from PIL import Image

from cli.plots import plots, save_plots
from nas_core.models import default_genotype
from nas_core.topology import CellType, cell_edges, num_alpha_columns
from nas_core.viz import CELL_SIZE, CURVES_SIZE, GRID_SIZE, heatmap_size
from store.history import record_epoch, save_genotype

GENOTYPE = default_genotype().to_dict()
NODES = 2  # the add_job fixture's config


def _cells(epoch: int) -> dict:
    def rows(t: CellType) -> list[list[float]]:
        return [[(epoch + 1) * 0.1 * (i - e.index) for i in range(num_alpha_columns(t))]
                for e in cell_edges(t, NODES)]

    return {t.value: {"alphas": rows(t), "betas": [0.1 * epoch] * len(cell_edges(t, NODES)), "genotype": GENOTYPE}
            for t in CellType}


@pytest.fixture
def search(alice, add_dataset, add_job, factory) -> str:
    """A running search of alice's with three epochs of history and a genotype."""
    job_id = add_job(alice[0], add_dataset(alice[0], synthetic=True), status="running")
    with factory() as session:
        for epoch in range(3):
            record_epoch(session, job_id, epoch, cells=_cells(epoch),
                         metrics={"train": {"loss": 1.0 - 0.2 * epoch, "arch_loss": None},
                                  "arch": {"dsc": 0.3 + 0.1 * epoch}})
        save_genotype(session, owner_id=alice[0], genotype=GENOTYPE, job_id=job_id, epoch=2)
        session.commit()
    return job_id


def _image_size(response, fmt: str) -> tuple[int, int]:
    if fmt == "png":
        assert response.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(response.content)) as image:
            image.load()
            return image.size
    assert response.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(response.content)
    return (round(float(root.get("width", "").removesuffix("pt")) * 100 / 72),
            round(float(root.get("height", "").removesuffix("pt")) * 100 / 72))


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_every_plot_of_a_running_search(client, alice, search, fmt) -> None:
    expected = {
        f"/v1/jobs/{search}/plots/alphas.{fmt}": heatmap_size(NODES),
        f"/v1/jobs/{search}/plots/curves.{fmt}": CURVES_SIZE,
        f"/v1/jobs/{search}/plots/genotype.{fmt}": CELL_SIZE,
        f"/v1/plots/grid.{fmt}?depth=3": GRID_SIZE,
    }
    for path, size in expected.items():
        response = client.get(path, headers=alice[1])
        assert response.status_code == 200, (path, response.text)
        assert _image_size(response, fmt) == size, path
        if "/jobs/" in path:
            assert response.headers["cache-control"] == "no-store"
    if fmt == "svg":  # the dataset is synthetic: the pictures say so
        assert b"SYNTHETIC" in client.get(f"/v1/jobs/{search}/plots/curves.svg", headers=alice[1]).content


def test_genotype_diagram_by_id_and_finished_jobs_cache(client, alice, search, factory) -> None:
    with factory() as session:
        row = save_genotype(session, owner_id=alice[0], genotype=GENOTYPE, job_id=search)
        session.commit()
        genotype_id = row.id
    response = client.get(f"/v1/genotypes/{genotype_id}/diagram.svg", headers=alice[1])
    assert response.status_code == 200 and _image_size(response, "svg") == CELL_SIZE
    texts = {t.text for t in ET.fromstring(response.content).iter("{http://www.w3.org/2000/svg}text")}
    assert {op for op, _ in GENOTYPE["dn"] + GENOTYPE["up"]} <= texts
    assert response.headers["cache-control"].startswith("private")


def test_another_users_job_and_genotype_are_404(client, alice, bob, search, factory) -> None:
    with factory() as session:
        genotype_id = save_genotype(session, owner_id=alice[0], genotype=GENOTYPE, job_id=search).id
        session.commit()
    for path in (f"/v1/jobs/{search}/plots/alphas.png", f"/v1/jobs/{search}/plots/curves.png",
                 f"/v1/jobs/{search}/plots/genotype.svg", f"/v1/genotypes/{genotype_id}/diagram.png"):
        response = client.get(path, headers=bob[1])
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
        assert client.get(path).status_code == 401


def test_nothing_to_draw_yet_is_a_clear_4xx(client, alice, add_dataset, add_job) -> None:
    dataset = add_dataset(alice[0])
    fresh = add_job(alice[0], dataset, status="running")
    for picture, code in (("genotype", "genotype_not_ready"), ("alphas", "alphas_not_ready"),
                          ("curves", "metrics_not_ready")):
        response = client.get(f"/v1/jobs/{fresh}/plots/{picture}.png", headers=alice[1])
        assert response.status_code == 404 and response.json()["error"]["code"] == code
        assert fresh in response.json()["error"]["message"]
    baseline = add_job(alice[0], dataset, kind="retrain", architecture={"baseline": "unet"})
    response = client.get(f"/v1/jobs/{baseline}/plots/genotype.png", headers=alice[1])
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_genotype"
    assert "baseline 'unet'" in response.json()["error"]["message"]
    response = client.get(f"/v1/jobs/{baseline}/plots/alphas.png", headers=alice[1])
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_a_search"


def test_bad_format_and_depth_are_422(client, alice, search) -> None:
    assert client.get(f"/v1/jobs/{search}/plots/curves.jpg", headers=alice[1]).status_code == 422
    assert client.get("/v1/plots/grid.png?depth=0", headers=alice[1]).status_code == 422
    assert client.get("/v1/plots/grid.png?depth=9", headers=alice[1]).status_code == 422


def test_cli_saves_every_picture_and_skips_what_is_not_there(client, alice, search, add_dataset, add_job,
                                                             tmp_path) -> None:
    client.headers.update(alice[1])
    saved, skipped = save_plots(client, search, tmp_path, "svg")
    assert sorted(p.name for p in saved) == ["alphas.svg", "curves.svg", "genotype.svg", "grid.svg"]
    assert skipped == {} and all(ET.parse(p).getroot().tag.endswith("svg") for p in saved)

    fresh = add_job(alice[0], add_dataset(alice[0], name="other"), status="running")
    saved, skipped = save_plots(client, fresh, tmp_path / "fresh", "png")
    assert [p.name for p in saved] == ["grid.png"]
    assert set(skipped) == {"alphas", "curves", "genotype"} and "no genotype yet" in skipped["genotype"]

    with pytest.raises(typer.Exit) as exit_info:
        save_plots(client, "job_missing", tmp_path, "png")
    assert exit_info.value.exit_code == 2
    with pytest.raises(typer.Exit):
        plots(search, out=tmp_path, url="http://127.0.0.1:9", api_key=None, fmt="gif")
