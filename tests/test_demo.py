"""``bench demo``: the Streamlit page, driven by ``streamlit.testing.v1.AppTest`` over a small
synthetic run: it loads, a pipeline and a frame show the pictures, the slider moves the mask,
and an uploaded image goes through the cached pipeline (issue 16)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.cli import main
from bench.records import load_records

testing = pytest.importorskip("streamlit.testing.v1",
                              reason="streamlit is missing: pip install -e '.[demo]'")

PIPELINE = "dark_channel+sliding_window[tile=32,stride=16]"  # soft, numpy only

TINY = '''name = "{name}"
description = "a tiny synthetic set for the demo tests"
loader = "synthetic"
[synthetic]
size = 64
smoke_rate = 0.7
smoke_coverage = 0.2
steam_rate = 0.5
[synthetic.quick]
train = 8
val = 6
test = 6
[splits.train]
seed = 1
[splits.val]
seed = 2
[splits.test]
seed = 3
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("demo")
    include = base / "include"
    include.mkdir()
    name = f"demosyn{abs(hash(str(base))) % 10**6}"
    (include / f"{name}.toml").write_text(TINY.format(name=name), encoding="utf-8")
    out = base / "results"
    assert main(["run", "--include", str(include), "--methods", f"{PIPELINE},all_smoke",
                 "--datasets", name, "--out", str(out), "--n-boot", "10", "--no-progress"]) == 0
    return {"out": out, "include": include, "name": name}


@pytest.fixture
def app(run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    from bench import demo_app

    for key, value in demo_app.environment(run["out"], {}).items():
        monkeypatch.setenv(key, value)
    at = testing.AppTest.from_file(demo_app.__file__, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def cached_final(run: dict[str, Any], frame_id: str) -> tuple[np.ndarray, float]:
    """The final stage's cached soft map of a frame (whole 64-px frames: one tile each) and
    the threshold its record calibrated."""
    rec = next(r for r in load_records(run["out"]) if r["method"] == PIPELINE)
    path = next((run["out"] / "cache" / rec["config"]["cache_key"]).glob("maps-test-*.npz"))
    with np.load(path) as npz:
        return npz[frame_id].astype(np.float64), float(rec["threshold"]["value"])


def select(at: Any, run: dict[str, Any], frame_id: str) -> None:
    box = at.selectbox(key="pipeline")
    box.select(next(o for o in box.options if o.startswith(f"{PIPELINE} — {run['name']}")))
    at.run()
    at.selectbox(key="frame").select(frame_id)
    at.run()
    assert not at.exception, at.exception


def captions(at: Any) -> dict[str, str]:
    """Caption -> URL of each picture on the page."""
    return {c: url for img in at.image for c, url in zip(img.captions, img.value, strict=True)}


def share(at: Any) -> float:
    return float(at.metric[0].value.rstrip("%"))


def smoky_frame(run: dict[str, Any], at: Any) -> str:
    """A test frame whose cached final map moves between thresholds 0.2 and 0.6."""
    for frame_id in at.selectbox(key="frame").options:
        soft, _ = cached_final(run, frame_id)
        if (soft >= 0.2).mean() - (soft >= 0.6).mean() > 0.01:
            return frame_id
    raise AssertionError("no frame's map changes between thresholds 0.2 and 0.6")


def test_page_loads_and_lists_the_run(app: Any, run: dict[str, Any]) -> None:
    options = app.selectbox(key="pipeline").options
    assert sorted(o.split(" — ")[0] for o in options) == ["all_smoke", PIPELINE]
    assert app.radio(key="source").value == "a frame of the data set"
    frames = app.selectbox(key="frame").options
    assert len(frames) == 6 and all(f.startswith("syn-test-3-") for f in frames)


def test_a_pipeline_and_a_frame_show_the_pictures(app: Any, run: dict[str, Any]) -> None:
    frame_id = smoky_frame(run, app)
    select(app, run, frame_id)
    pics = captions(app)
    soft, threshold = cached_final(run, frame_id)
    assert set(pics) == {"image", "ground truth", "CAM heat map",
                         f"pseudo labels (threshold {threshold:.2f})",
                         f"final mask (threshold {threshold:.2f})"}  # one stage: all three
    assert all(url for url in pics.values())
    assert app.slider[0].value == pytest.approx(threshold)
    assert share(app) == pytest.approx(100 * float((soft >= threshold).mean()), abs=0.006)
    table = app.dataframe[0].value
    assert list(table["mask"]) == ["pseudo", "final"]


def test_moving_the_slider_changes_the_mask(app: Any, run: dict[str, Any]) -> None:
    frame_id = smoky_frame(run, app)
    select(app, run, frame_id)
    soft, _ = cached_final(run, frame_id)
    app.slider[0].set_value(0.2).run()
    low = captions(app)["final mask (threshold 0.20)"]
    assert share(app) == pytest.approx(100 * float((soft >= 0.2).mean()), abs=0.006)
    app.slider[0].set_value(0.6).run()
    assert not app.exception
    high = captions(app)["final mask (threshold 0.60)"]
    assert share(app) == pytest.approx(100 * float((soft >= 0.6).mean()), abs=0.006)
    assert high != low  # another picture: the mask changed
    # another pipeline's slider starts at that pipeline's calibrated threshold
    box = app.selectbox(key="pipeline")
    box.select(next(o for o in box.options if o.startswith("all_smoke"))).run()
    rec = next(r for r in load_records(run["out"]) if r["method"] == "all_smoke")
    assert app.slider[0].value == pytest.approx(rec["threshold"]["value"])


def test_an_uploaded_image_goes_through_the_cached_pipeline(app: Any,
                                                            run: dict[str, Any]) -> None:
    """Uploading a test frame as a PNG gives the same final mask as the cached map of that
    frame: the page ran the run's stages on it (nothing trained)."""
    from PIL import Image

    from bench.data import DATASETS
    from bench.data.splits import load_splits

    frame_id = smoky_frame(run, app)
    data = load_splits(DATASETS.get(run["name"]), None, "quick", None, splits=["test"])
    image = next(s.image for s in data["test"] if s.id == frame_id)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    select(app, run, frame_id)
    app.slider[0].set_value(0.3).run()
    from_cache = share(app)
    app.radio(key="source").set_value("an uploaded image").run()
    app.file_uploader(key="upload").set_value((f"{frame_id}.png", buf.getvalue(),
                                               "image/png")).run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    pics = captions(app)
    assert "ground truth" not in pics and "final mask (threshold 0.30)" in pics
    assert share(app) == pytest.approx(from_cache, abs=1e-9)


def test_bench_demo_without_records_says_so(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no records under" in err
