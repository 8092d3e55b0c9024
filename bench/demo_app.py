"""``bench demo``: a Streamlit page over the trained pipelines of a run folder.

Pick a pipeline the run trained, then a frame of its data set or an uploaded image, and see the
image, its ground truth (for a frame), the CAM heat map, the pseudo labels and the final mask
as overlays. A slider moves the threshold of the last soft map of the pipeline (the final mask
when the last stage is soft, else the pseudo labels, else the CAM), starting at the threshold
its record calibrated; with ground truth, the per-frame scores follow it.

Frames of the data set are shown from the run's cached maps (`bench.record_maps`); an uploaded
image goes through the pipeline's cached trained models (`bench.cached_pipeline`). Nothing is
ever trained here: a pipeline whose models are not in the cache says so.

``bench demo --out DIR`` starts it (``streamlit run`` on this file, the run folder and data
roots passed in `ENV_OUT` and `ENV_ROOTS`). Streamlit is the optional extra ``[demo]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

#: environment variables ``bench demo`` passes the page its run folder and data roots in
ENV_OUT = "BENCH_DEMO_OUT"
ENV_ROOTS = "BENCH_DEMO_DATA_ROOTS"
#: longest side of the pictures on the page
SIDE = 384
FRAME = "a frame of the data set"
UPLOAD = "an uploaded image"


def environment(out: Path, data_roots: dict[str, str]) -> dict[str, str]:
    """The environment the page reads its run folder and data roots from."""
    return {ENV_OUT: str(Path(out).resolve()), ENV_ROOTS: json.dumps(data_roots)}


def pipeline_label(rec: dict[str, Any]) -> str:
    """How the page lists a pipeline."""
    return (f"{rec['method']} — {rec['dataset']}/{rec['split']} (profile {rec['profile']}, "
            f"seed {rec['seed']})")


def trained_pipelines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Final records of pipelines that ran, in domain, scored on pixel masks (best mIoU
    first)."""
    finals = [r for r in records if r["method"] == r["pipeline"] and not r.get("not_run")
              and r.get("level", "pixel") == "pixel"
              and r.get("train_dataset", r["dataset"]) == r["dataset"]]
    return sorted(finals, key=lambda r: (-(r.get("metrics") or {}).get("mIoU", 0.0),
                                         r["method"], r["dataset"]))


def slider_role(roles: dict[str, Any]) -> str | None:
    """The role whose soft map the slider thresholds: final, else pseudo, else cam."""
    for role in ("final", "pseudo", "cam"):
        rec = roles.get(role)
        if isinstance(rec, dict) and rec.get("output") == "soft":
            return role
    return None


def scores(labels: np.ndarray, mask: np.ndarray | None) -> dict[str, float] | None:
    """Per-frame smoke IoU, mIoU, precision and recall of a label map against ``mask``."""
    if mask is None:
        return None
    from bench.metrics import image_areas
    from bench.record_maps import frame_scores

    return frame_scores(image_areas((np.asarray(labels) == 1).astype(np.uint8), mask))


def main() -> None:
    """The page."""
    import streamlit as st

    from bench.record_maps import Missing, RunMaps

    st.set_page_config(page_title="smoke-wsss-bench demo", layout="wide")
    out = Path(os.environ.get(ENV_OUT, "results"))
    roots = json.loads(os.environ.get(ENV_ROOTS, "{}") or "{}")
    st.title("smoke-wsss-bench demo")

    @st.cache_resource(show_spinner=False)
    def run_maps(folder: str, roots_json: str) -> RunMaps:
        return RunMaps(Path(folder), json.loads(roots_json))

    if not (out / "records").is_dir():
        st.error(f"No records under {out / 'records'}: run 'bench run --out {out}' first.")
        return
    maps = run_maps(str(out), json.dumps(roots, sort_keys=True))
    finals = trained_pipelines(maps.records)
    if not finals:
        st.error(f"No pipeline with pixel-level records in {out}.")
        return
    st.caption(f"Run folder {out}: {len(finals)} pipeline(s). Cached maps and models only; "
               "nothing is trained here.")
    labels = [pipeline_label(r) for r in finals]
    choice = st.selectbox("Pipeline", labels, key="pipeline")
    rec = finals[labels.index(choice)]
    roles = maps.roles(rec)
    which, thresholds = threshold_slider(st, roles)
    source = st.radio("Image", (FRAME, UPLOAD), key="source", horizontal=True)

    image: np.ndarray | None = None
    gt: np.ndarray | None = None
    aux: dict[str, np.ndarray] = {}
    stage_maps: dict[str, np.ndarray | Missing | None] = {}
    if source == FRAME:
        frames = maps.frames(rec)
        if isinstance(frames, Missing):
            st.error(frames.reason)
            return
        frame_id = st.selectbox("Frame", frames.ids, key="frame")
        view = frames.view(frame_id)
        image, gt, aux = frames.image(frame_id), view.mask, dict(view.aux)
        for role, role_rec in roles.items():
            stage_maps[role] = role_rec if not isinstance(role_rec, dict) else \
                maps.frame_map(role_rec, frame_id)
    else:
        uploaded = st.file_uploader("Image (JPEG or PNG)", type=["jpg", "jpeg", "png"],
                                    key="upload")
        if uploaded is None:
            st.info("Upload an image to run the pipeline's cached models on it.")
            return
        from bench.errors import BenchError

        image = read_upload(uploaded.getvalue())
        try:
            outputs = pipeline(str(out), json.dumps(roots, sort_keys=True), rec["_path"]) \
                .apply(image, uploaded.name)
        except BenchError as exc:  # not trained, key changed, plugin error: said on the page
            st.error(str(exc))
            return
        from bench.record_maps import stage_roles

        for role, index in stage_roles(rec).items():
            role_rec = roles.get(role)
            stage_maps[role] = None if index is None else (
                role_rec if isinstance(role_rec, Missing) else outputs[index])
    show(st, roles, which, thresholds, image, gt, aux, stage_maps)


def read_upload(payload: bytes) -> np.ndarray:
    """An uploaded file as a uint8 HxWx3 RGB image."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(payload)) as pil:
        return np.asarray(pil.convert("RGB"))


def pipeline(folder: str, roots_json: str, record_file: str) -> Any:
    """The cached trained pipeline of a record (kept across reruns of the page)."""
    import streamlit as st

    @st.cache_resource(show_spinner="Loading the trained pipeline from the cache ...")
    def load(folder: str, roots_json: str, record_file: str) -> Any:
        from bench.cached_pipeline import CachedPipeline
        from bench.records import load_records

        recs = {r["_path"]: r for r in load_records(Path(folder))}
        return CachedPipeline(recs[record_file], Path(folder), json.loads(roots_json))

    return load(folder, roots_json, record_file)


def threshold_slider(st: Any, roles: dict[str, Any]) -> tuple[str | None, dict[str, float]]:
    """The slider over the last soft stage (`slider_role`); returns that role and the threshold
    of each soft stage (its record's, the slider's for that one)."""
    from bench.record_maps import record_threshold

    which = slider_role(roles)
    thresholds: dict[str, float] = {}
    for role in ("cam", "pseudo", "final"):
        role_rec = roles.get(role)
        if isinstance(role_rec, dict) and role_rec.get("output") == "soft":
            thresholds[role] = record_threshold(role_rec)
    if which is not None:
        calibrated = thresholds[which]
        thresholds[which] = st.slider(
            f"Threshold of the {which} stage's soft map ({roles[which]['method']}; "
            f"calibrated: {calibrated:.2f})", 0.0, 1.0, calibrated, 0.01,
            key=f"threshold:{roles[which]['config']['cache_key']}")  # a pipeline starts calibrated
    else:
        st.caption("Every stage of this pipeline outputs labels: no threshold to move.")
    return which, thresholds


def show(st: Any, roles: dict[str, Any], which: str | None, thresholds: dict[str, float],
         image: np.ndarray, gt: np.ndarray | None, aux: dict[str, np.ndarray],
         stage_maps: dict[str, Any]) -> None:
    """The pictures and the scores."""
    from bench.overlays import (
        fit_size,
        heat_overlay,
        label_overlay,
        outline,
        shrink_image,
        shrink_map,
        shrink_mask,
    )
    from bench.record_maps import Missing, binarize_at

    size = fit_size(image.shape[:2], SIDE)
    small = shrink_image(image, size)
    small_aux = {k: shrink_mask(v, size) for k, v in aux.items()}
    pictures: list[tuple[str, np.ndarray | str]] = [("image", outline(small, small_aux))]
    if gt is not None:
        pictures.append(("ground truth", outline(label_overlay(small, shrink_map(gt, size, True)),
                                                 small_aux)))
    masks: dict[str, np.ndarray] = {}
    for role, title in (("cam", "CAM heat map"), ("pseudo", "pseudo labels"),
                        ("final", "final mask")):
        m = stage_maps.get(role)
        role_rec = roles.get(role)
        if m is None or role_rec is None:
            pictures.append((title, "not applicable: trained on ground-truth masks"))
            continue
        if isinstance(m, Missing):
            pictures.append((title, f"missing: {m.reason}"))
            continue
        soft = role_rec.get("output") == "soft"
        if role == "cam" and soft:
            pictures.append((title, outline(heat_overlay(small, shrink_map(m, size, False)),
                                            small_aux)))
            if role == which:
                masks[role] = binarize_at(m, thresholds[role])
            continue
        labels = binarize_at(m, thresholds[role]) if soft else np.asarray(m, np.uint8)
        masks[role] = labels
        suffix = f" (threshold {thresholds[role]:.2f})" if soft else ""
        pictures.append((title + suffix, outline(label_overlay(small, shrink_map(
            labels, size, True)), small_aux)))
    columns = st.columns(len(pictures))
    for column, (title, picture) in zip(columns, pictures, strict=True):
        with column:
            if isinstance(picture, str):
                st.markdown(f"**{title}**")
                st.warning(picture)
            else:
                st.image(picture, caption=title, width="stretch")
    if which is not None and which in masks:
        share = float((masks[which] == 1).mean())
        st.metric(f"smoke share of the {which} mask", f"{100 * share:.2f}%",
                  help=f"{int((masks[which] == 1).sum())} of {masks[which].size} pixels")
    if gt is not None:
        rows = []
        for role in ("pseudo", "final"):
            if role in masks:
                found = scores(masks[role], gt)
                assert found is not None
                rows.append({"mask": role, **{k: round(100 * v, 2) for k, v in found.items()}})
        if rows:
            import pandas as pd

            st.markdown("**Per-frame scores (%)** against the ground truth")
            st.dataframe(pd.DataFrame(rows), hide_index=True)


if __name__ == "__main__":
    main()
