"""Batch manifests: the models, load/save round trips, and every rejection before any work."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tomoflow.batch.manifest import AngleRange, Manifest, ScanEntry, load_manifest, save_manifest, scan_outputs
from tomoflow.batch.stages import ALIGN_OPTIONS, AlignStage, ReconStage, RecoverStage, TrainOptions
from tomoflow.errors import ConfigError, InputError


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A folder of (fake) raw inputs the manifests name: file existence is all load_manifest checks."""
    d = tmp_path / "raw"
    (d / "tiffs").mkdir(parents=True)
    for name in ("a.h5", "b.txrm", "tiffs/p_0.tif", "tiffs/p_1.tif", "angles.txt", "flat.tif"):
        (d / name).write_bytes(b"x")
    hr = d / "hr.zarr"
    hr.mkdir()
    (hr / "zarr.json").write_text("{}")
    w = d / "recover_unet.safetensors"
    w.write_bytes(b"w")
    w.with_suffix(".json").write_text("{}")
    return d


def _write(folder: Path, doc: Any, name: str = "batch.yaml") -> Path:
    p = folder / name
    p.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc, sort_keys=False))
    return p


def _doc(**extra: Any) -> dict[str, Any]:
    doc = {
        "version": 1,
        "output": "out",
        "pipeline": ["ingest", "recon"],
        "scans": [{"name": "a", "path": "raw/a.h5"}, {"name": "b", "path": "raw/b.txrm"}],
    }
    doc.update(extra)
    return doc


def _error(tmp_path: Path, doc: Any, *words: str, kind: type = ConfigError, name: str = "batch.yaml") -> str:
    p = _write(tmp_path, doc, name)
    with pytest.raises(kind) as info:
        load_manifest(p)
    msg = str(info.value)
    assert str(p) in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    assert "pydantic" not in msg and "errors.pydantic.dev" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- valid manifests
def test_minimal_manifest_loads_with_defaults_and_absolute_paths(tmp_path, raw):
    m = load_manifest(_write(tmp_path, _doc()))
    assert m.version == 1 and m.cluster == "local" and m.retries == 2 and m.max_scans_in_flight is None
    assert m.output == tmp_path / "out"
    assert m.scans[0].path == raw / "a.h5" and m.scans[0].format == "auto"
    assert [s.stage for s in m.pipeline] == ["ingest", "recon"]
    assert m.pipeline[1].kwargs() == {"algorithm": "fbp", "filter": "ramp"}
    assert m.stage_names(m.scans[1]) == ["ingest", "recon"]


def _full_doc() -> dict[str, Any]:
    return {
        "version": 1,
        "output": "out",
        "cluster": "none",
        "retries": 0,
        "max_scans_in_flight": 3,
        "pipeline": [
            "ingest",
            {"stage": "align", "method": "consistency", "n_iter": 5, "vertical": False},
            {"stage": "recon", "algorithm": "mlem", "iterations": 7, "shape": [16, 16]},
            {"stage": "recover", "model": "train", "train": {"epochs": 2, "channels": [4, 8]}, "dof": 6},
        ],
        "scans": [
            {
                "name": "a",
                "path": "raw/a.h5",
                "center": 12.5,
                "pixel_size_um": 0.03,
                "hr": "raw/hr.zarr",
                "overrides": {
                    "recon": {"algorithm": "fbp", "iterations": None, "filter": "hann"},
                    "recover": {"model": "raw/recover_unet.safetensors"},
                },
            },
            {"name": "hr-scan", "path": "raw/b.txrm", "angles": [-45, 45, 15], "stages": ["ingest", "recon"]},
            {
                "name": "tiffs",
                "path": "raw/tiffs",
                "angles": "raw/angles.txt",
                "flats": ["raw/flat.tif"],
                "center": "AUTO",
                "hr_scan": "hr-scan",
                "overrides": {"recover": {"train": {"epochs": 3}}},
            },
            {"name": "lfov-only", "stages": ["recover"], "volume": "raw/hr.zarr", "hr": "raw/hr.zarr"},
            {"name": "listed", "path": "raw/tiffs/p_*.tif", "angles": [0.0, 90.0], "stages": ["ingest"]},
        ],
    }


def test_full_manifest_for_the_runner(tmp_path, raw):
    m = load_manifest(_write(tmp_path, _full_doc()))
    a, hr_scan, tiffs, lfov, listed = m.scans
    assert a.ingest_kwargs() == {"format": "auto", "pixel_size_um": 0.03}
    assert hr_scan.ingest_kwargs()["angles"] == (-45.0, 45.0, 15.0) and isinstance(hr_scan.angles, AngleRange)
    assert tiffs.ingest_kwargs() == {
        "format": "auto",
        "angles": str(raw / "angles.txt"),
        "flats": [str(raw / "flat.tif")],
    }
    assert tiffs.center == "auto" and a.center == 12.5
    assert listed.ingest_kwargs()["angles"] == [0.0, 90.0]
    # stages with the per-scan overrides applied
    sa = m.stages_for(a)
    assert [s.stage for s in sa] == ["ingest", "align", "recon", "recover"]
    assert sa[1].kwargs() == {"method": "consistency", "max_size": 256, "vertical": False, "n_iter": 5}
    assert sa[2].kwargs() == {"algorithm": "fbp", "filter": "hann", "shape": (16, 16)}  # shape from the pipeline
    assert sa[3].model == raw / "recover_unet.safetensors" and sa[3].training() is None and sa[3].dof == 6
    st = m.stages_for(tiffs)
    assert st[3].model == "train" and st[3].training().epochs == 3 and st[3].training().channels == (4, 8)
    assert st[3].training().kwargs()["config"].channels == (4, 8)
    assert RecoverStage().training() == TrainOptions()
    assert [s.stage for s in m.stages_for(lfov)] == ["recover"]
    assert m.stages_for(hr_scan)[-1].kwargs() == {"algorithm": "mlem", "n_iter": 7, "shape": (16, 16)}
    # the HR volume of a scan paired with another scan of the batch is that scan's volume
    assert m.hr_volume(tiffs) == scan_outputs(m, "hr-scan")["volume"]
    assert m.hr_volume(a) == raw / "hr.zarr"
    out = scan_outputs(m, a)
    assert out["dir"] == tmp_path / "out" / "a"
    assert {k: v.name for k, v in out.items() if k != "dir"} == {
        "scan": "scan.zarr",
        "aligned": "aligned.zarr",
        "volume": "volume.zarr",
        "registration": "registration.json",
        "training": "training",
        "recovered": "recovered.zarr",
        "report": "scan-report.json",
    }
    assert all(out["dir"] in p.parents for k, p in out.items() if k != "dir")


@pytest.mark.parametrize("name", ["m.yaml", "m.yml", "m.json"])
def test_save_load_round_trip(tmp_path, raw, name):
    m = load_manifest(_write(tmp_path, _full_doc()))
    p = save_manifest(m, tmp_path / name)
    assert load_manifest(p) == m
    text = p.read_text()
    assert "raw/a.h5" in text and str(tmp_path) not in text  # paths inside the folder written relative
    # written elsewhere, the paths stay absolute and still load to the same manifest
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert load_manifest(save_manifest(m, other / name)) == m


def test_saved_manifest_validates_against_the_json_schema(tmp_path, raw):
    import jsonschema

    from tomoflow.schemas import schema_json

    schema = json.loads(schema_json("batch-manifest"))
    p = save_manifest(load_manifest(_write(tmp_path, _full_doc())), tmp_path / "m.json")
    jsonschema.validate(json.loads(p.read_text()), schema)
    jsonschema.validate(_doc(), schema)  # bare stage names too
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_doc(colour="blue"), schema)


def test_model_built_in_python(tmp_path):
    m = Manifest(
        version=1,
        output=tmp_path / "o",
        pipeline=["ingest", AlignStage(method="phase"), ReconStage()],
        scans=[ScanEntry(name="s1", path=tmp_path / "s1.h5")],
    )
    assert m.pipeline[1].kwargs() == {"method": "phase", "max_size": 256}
    assert load_manifest(save_manifest(m, tmp_path / "m.yaml"), check_files=False) == m


def test_check_files_false_skips_the_file_checks(tmp_path):
    assert load_manifest(_write(tmp_path, _doc()), check_files=False).scans[1].name == "b"


# ----------------------------------------------------------------------------- rejections
@pytest.mark.parametrize(
    "doc, where",
    [
        (_doc(colour="blue"), "colour: unknown key (known here: cluster, max_scans_in_flight, output"),
        (_doc(scans=[{"name": "a", "path": "raw/a.h5", "centre": 3}]), "scans[0].centre: unknown key"),
        (_doc(pipeline=["ingest", {"stage": "recon", "iteration": 3}]), "pipeline[1].iteration: unknown key"),
        (
            _doc(pipeline=["ingest", "recon", {"stage": "recover", "train": {"epoch": 3}}]),
            "pipeline[2].train.epoch: unknown key (known here: batch, channels",
        ),
        (
            _doc(scans=[{"name": "a", "path": "raw/tiffs", "angles": {"start": 0, "stop": 1, "step": 1, "n": 2}}]),
            "scans[0].angles.n: unknown key (known here: start, step, stop)",
        ),
        (
            _doc(scans=[{"name": "a", "path": "raw/a.h5", "overrides": {"recon": {"algo": "sirt"}}}]),
            "scans[0].overrides.recon.algo: unknown key (known here: algorithm, filter, iterations, shape, stage)",
        ),
        (_doc(scans=[{"name": "a", "path": "raw/a.h5", "overrides": {"regrid": {}}}]), "scans[0].overrides.regrid"),
    ],
)
def test_unknown_keys_are_refused_at_every_level(tmp_path, raw, doc, where):
    _error(tmp_path, doc, where)


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "/abs", "..", ".hidden", "a..b", "-x", "a b", "a\\b", "x" * 129, "", "CON", "nul.txt", "ä"]
)
def test_names_that_could_escape_the_output_root_are_refused(tmp_path, raw, name):
    _error(tmp_path, _doc(scans=[{"name": name, "path": "raw/a.h5"}]), "scans[0].name", "not a safe scan name")


@pytest.mark.parametrize("name", ["thumbnails", "Batch-Report.json", "dask-performance.html"])
def test_names_of_the_batch_report_are_refused_at_load(tmp_path, raw, name):
    _error(tmp_path, _doc(scans=[{"name": name, "path": "raw/a.h5"}]), "scans[0].name", "taken by the batch report")


def test_yaml_numbers_as_names_say_to_quote_them(tmp_path, raw):
    p = tmp_path / "batch.yaml"
    p.write_text("version: 1\noutput: out\npipeline: [ingest]\nscans:\n  - {name: 001, path: raw/a.h5}\n")
    with pytest.raises(ConfigError, match=r"scans\[0\]\.name: .*put it in quotes"):
        load_manifest(p)


def test_duplicate_names_ignoring_case(tmp_path, raw):
    doc = _doc(
        scans=[
            {"name": "scan", "path": "raw/a.h5"},
            {"name": "b", "path": "raw/b.txrm"},
            {"name": "SCAN", "path": "raw/b.txrm"},
        ]
    )
    _error(tmp_path, doc, "scans[2].name: 'SCAN' is the name of scans[0] too")


@pytest.mark.parametrize(
    "pipeline, words",
    [
        (["recon", "ingest"], ["pipeline[1]: stage 'ingest' comes too late"]),
        (["ingest", "recon", "recon"], ["pipeline[2]: stage 'recon' appears twice"]),
        (["align", "recon"], ["pipeline[0]: stage 'align' needs ingest first", "pipeline[1]: stage 'recon' needs"]),
        ([], ["pipeline: List should have at least 1 item"]),
        (["ingest", "reconstruct"], ["pipeline[1]", "'reconstruct'", "does not match any of the expected tags"]),
        (
            ["ingest", {"stage": "align", "method": "fourier"}],
            ["pipeline[1].method: Input should be 'hybrid', 'resnet', 'phase' or 'consistency' (got 'fourier')"],
        ),
        (["ingest", {"stage": "recon", "algorithm": "art"}], ["pipeline[1].algorithm", "'fbp', 'mlem' or 'sirt'"]),
        (["ingest", {"stage": "recon", "filter": "ramlak"}], ["pipeline[1].filter", "'shepp-logan'"]),
        (["ingest", {"stage": "recon", "iterations": 5}], ["pipeline[1]: iterations apply to mlem and sirt"]),
        (["ingest", {"stage": "recon", "algorithm": "sirt", "filter": "hann"}], ["filter applies to fbp only"]),
        (
            ["ingest", {"stage": "align", "method": "phase", "passes": 2}],
            ["pipeline[1]: method 'phase' does not use passes (passes applies to hybrid, resnet)"],
        ),
        (["ingest", {"stage": "align", "max_size": 8}], ["pipeline[1].max_size", "greater than or equal to 32"]),
        (["ingest", "recon", {"stage": "recover", "dof": 7}], ["pipeline[2].dof"]),
        (["ingest", "recon", {"stage": "recover", "model": 3}], ["pipeline[2].model", "'train' or the path"]),
    ],
)
def test_bad_pipelines(tmp_path, raw, pipeline, words):
    _error(tmp_path, _doc(pipeline=pipeline), *words)


def test_recover_needs_an_hr_volume_on_every_scan_that_runs_it(tmp_path, raw):
    doc = _doc(
        pipeline=["ingest", "recon", "recover"],
        scans=[{"name": "a", "path": "raw/a.h5", "hr": "raw/hr.zarr"}, {"name": "b", "path": "raw/b.txrm"}],
    )
    msg = _error(tmp_path, doc, "scans[1].hr: recover needs the paired HR volume")
    assert "scans[0]" not in msg


@pytest.mark.parametrize(
    "scans, words",
    [
        (
            [{"name": "a", "stages": ["recover"], "hr": "raw/hr.zarr"}],
            ["scans[0].volume: recover needs recon, or an existing LFOV volume store"],
        ),
        (
            [{"name": "a", "path": "raw/a.h5", "hr": "raw/hr.zarr", "volume": "raw/hr.zarr"}],
            ["scans[0].volume: recon makes this scan's volume"],
        ),
        ([{"name": "a", "path": "raw/a.h5", "hr_scan": "a"}], ["scans[0].hr_scan: 'a' is this scan"]),
        ([{"name": "a", "path": "raw/a.h5", "hr_scan": "zz"}], ["scans[0].hr_scan: 'zz' is no scan of this manifest"]),
        (
            [
                {"name": "a", "path": "raw/a.h5", "hr_scan": "b"},
                {"name": "b", "path": "raw/b.txrm", "hr": "raw/hr.zarr"},
            ],
            ["scans[0].hr_scan: scan 'b' must run recon (its volume is the HR) and not recover"],
        ),
        ([{"name": "a", "path": "raw/a.h5", "hr": "raw/hr.zarr", "hr_scan": "b"}], ["scans[0].hr_scan: give hr"]),
        (
            [{"name": "a", "stages": ["recon", "recover"], "hr": "raw/hr.zarr", "path": "raw/a.h5"}],
            ["scans[0].stages: align and recon need ingest"],
        ),
        (
            [{"name": "a", "path": "raw/a.h5", "stages": ["ingest", "align"], "hr": "raw/hr.zarr"}],
            ["scans[0].stages: align not in the pipeline (ingest, recon, recover)"],
        ),
        ([{"name": "a", "hr": "raw/hr.zarr"}], ["scans[0].path: the raw scan is needed by ingest"]),
        (
            [
                {
                    "name": "a",
                    "path": "raw/a.h5",
                    "hr": "raw/hr.zarr",
                    "overrides": {"recover": {"model": "train", "dof": 4}},
                }
            ],
            ["scans[0].overrides.recover.dof"],
        ),
    ],
)
def test_scans_must_fit_the_pipeline(tmp_path, raw, scans, words):
    _error(tmp_path, _doc(pipeline=["ingest", "recon", "recover"], scans=scans), *words)


@pytest.mark.parametrize(
    "scan, words",
    [
        ({"name": "t", "path": "raw/tiffs"}, ["scans[0].angles: tiff scans carry no rotation angles"]),
        ({"name": "t", "path": "raw/tiffs/*.tif"}, ["scans[0].angles: tiff scans carry no rotation angles"]),
        ({"name": "t", "path": "raw/a.h5", "format": "numpy"}, ["scans[0].angles: numpy scans"]),
        ({"name": "t", "path": "raw/a.h5", "format": "hdf"}, ["scans[0].format", "'dxchange'"]),
        ({"name": "t", "path": "raw/a.h5", "flats": "raw/flat.tif"}, ["scans[0].flats: flats and darks are given for"]),
        ({"name": "t", "path": "raw/b.txrm", "entry": "/entry"}, ["scans[0].entry: entry applies to NeXus files only"]),
        ({"name": "t", "path": "raw/a.h5", "angles": [0, 180, 0]}, ["scans[0].angles: step 0 does not lead"]),
        ({"name": "t", "path": "raw/a.h5", "angles": [5]}, ["scans[0].angles: a list of angles needs one angle"]),
        ({"name": "t", "path": "raw/a.h5", "angles": 180}, ["scans[0].angles: expected a list of angles"]),
        ({"name": "t", "path": "raw/a.h5", "angles": [0, "x", 2, 3]}, ["scans[0].angles[1]"]),
        ({"name": "t", "path": "raw/a.h5", "center": -1}, ["scans[0].center: expected a rotation axis column"]),
        ({"name": "t", "path": "raw/a.h5", "center": "middle"}, ["scans[0].center"]),
        ({"name": "t", "path": "raw/a.h5", "pixel_size_um": 0}, ["scans[0].pixel_size_um", "greater than 0"]),
        ({"name": "t", "path": "raw/a.h5", "flats": []}, ["scans[0].flats"]),
    ],
)
def test_bad_scan_settings(tmp_path, raw, scan, words):
    _error(tmp_path, _doc(pipeline=["ingest"], scans=[scan]), *words)


@pytest.mark.parametrize(
    "key, value, ok",
    [
        ("cluster", "local-cuda", True),
        ("cluster", "slurm:gpu", True),
        ("cluster", "tcp://10.0.0.1:8786", True),
        ("cluster", "node7:8786", True),
        ("cluster", "none", True),
        ("cluster", "local:big", False),
        ("cluster", "kubernetes", False),
        ("retries", -1, False),
        ("max_scans_in_flight", 0, False),
        ("version", 2, False),
        ("output", None, False),
    ],
)
def test_top_level_values(tmp_path, raw, key, value, ok):
    doc = _doc(**{key: value})
    if ok:
        assert getattr(load_manifest(_write(tmp_path, doc)), key) == value
    else:
        _error(tmp_path, doc, f"{key}:")


def test_a_cluster_file_is_resolved_and_checked(tmp_path, raw):
    msg = _error(tmp_path, _doc(cluster="site.yaml"), "cluster: ", "site.yaml (no such file)", kind=InputError)
    assert str(tmp_path / "site.yaml") in msg
    (tmp_path / "site.yaml").write_text("kind: slurm\n")
    assert load_manifest(tmp_path / "batch.yaml").cluster == str(tmp_path / "site.yaml")


def test_missing_files_are_listed_all_at_once(tmp_path, raw):
    doc = _doc(
        pipeline=["ingest", "recon", {"stage": "recover", "model": "nets/w.safetensors"}],
        scans=[
            {"name": "a", "path": "raw/nope.h5", "hr": "raw/nohr.zarr"},
            {"name": "b", "path": "raw/tiffs/q_*.tif", "angles": "raw/no-angles.txt", "hr": "raw/a.h5"},
            {"name": "c", "path": "raw/b.txrm", "hr": "raw/hr.zarr"},
        ],
    )
    msg = _error(tmp_path, doc, "6 input(s) of the manifest missing", kind=InputError)
    for w in (
        "scans[0] (a).path: ",
        "nope.h5 (no such file or folder)",
        "scans[0] (a).hr: ",
        "scans[1] (b).path",
        "q_*.tif (no file matches)",
        "no-angles.txt",
        "scans[1] (b).hr: ",
        "(not a zarr store: no zarr.json)",
        "pipeline.recover.model: ",
        "w.safetensors (no such file)",
    ):
        assert w in msg, (w, msg)
    assert "scans[2]" not in msg


def test_a_model_without_its_card_is_refused(tmp_path, raw):
    (raw / "recover_unet.json").unlink()
    doc = _doc(
        pipeline=["ingest", "recon", {"stage": "recover", "model": "raw/recover_unet.safetensors"}],
        scans=[{"name": "a", "path": "raw/a.h5", "hr": "raw/hr.zarr"}],
    )
    _error(tmp_path, doc, "recover_unet.json (its model card is missing)", kind=InputError)


def test_output_inside_an_input_is_refused(tmp_path, raw):
    doc = _doc(output="raw/tiffs/out", scans=[{"name": "t", "path": "raw/tiffs", "angles": [0, 1]}])
    _error(tmp_path, doc, "output: is inside the input", "of scans[0]")


def test_an_input_inside_a_scan_output_folder_is_refused(tmp_path, raw):
    # output root = raw/: scan "tiffs" would write into raw/tiffs/, the folder of its own input
    doc = _doc(
        output="raw",
        scans=[{"name": "a", "path": "raw/a.h5"}, {"name": "TIFFS", "path": "raw/tiffs", "angles": [0, 1]}],
    )
    _error(tmp_path, doc, "scans[1]: its input", "is inside the output folder of scans[1] (TIFFS)")


def test_scan_outputs_refuse_a_link_out_of_the_output_root(tmp_path, raw):
    m = load_manifest(_write(tmp_path, _doc()))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a").symlink_to(tmp_path / "raw")
    with pytest.raises(ConfigError, match="not inside the output root"):
        scan_outputs(m, "a")
    assert scan_outputs(m, "b")["dir"] == tmp_path / "out" / "b"


@pytest.mark.parametrize(
    "text, name, words",
    [
        ("version: 1\nscans: [\n", "batch.yaml", ["invalid YAML at line"]),
        ("version: 1\nversion: 1\n", "batch.yaml", ["duplicate key 'version'"]),
        ('{"version": 1, "version": 1}', "batch.json", ["invalid JSON: duplicate key 'version'"]),
        ('{"version": 1,}', "batch.json", ["invalid JSON at line 1"]),
        ("- a\n- b\n", "batch.yaml", ["a batch manifest is a mapping"]),
        ("version: 1\n", "batch.txt", ["a .yaml, .yml or .json file"]),
    ],
)
def test_unreadable_manifests(tmp_path, text, name, words):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_manifest(p)
    assert str(p) in str(info.value)
    for w in words:
        assert w in str(info.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(InputError, match="no such manifest file"):
        load_manifest(tmp_path / "nope.yaml")


def test_all_field_errors_are_reported_together(tmp_path, raw):
    doc = _doc(colour=1, scans=[{"name": "../a", "path": "raw/a.h5"}, {"name": "b/", "path": "raw/b.txrm", "x": 1}])
    msg = _error(tmp_path, doc, "colour: unknown key", "scans[0].name", "scans[1].name", "scans[1].x: unknown key")
    assert len(msg.splitlines()) == 5


# ----------------------------------------------------------------------------- drift guards
def test_align_options_are_options_of_the_methods_kernels():
    """Every option AlignStage passes for a method is a parameter of that method's kernel function."""
    from tomoflow.align.consistency import align_consistency, align_phase
    from tomoflow.align.hybrid import align_hybrid, align_resnet, refine
    from tomoflow.pipeline.align import METHODS

    params = {
        m: set(inspect.signature(f).parameters)
        for m, f in (("phase", align_phase), ("resnet", align_resnet), ("consistency", align_consistency))
    }
    params["hybrid"] = (
        set(inspect.signature(align_hybrid).parameters)
        | set(inspect.signature(refine).parameters)
        | params["consistency"]
    )
    assert set(params) == set(METHODS)
    for option, methods in ALIGN_OPTIONS.items():
        for m in methods:
            assert option in params[m], (option, m)
        assert option in AlignStage.model_fields


def test_stage_defaults_match_the_commands():
    """Train options default as ``tomoflow train-recovery``; recover as ``tomoflow register`` / ``recover``."""
    from tomoflow.cli.recovery import recover, register
    from tomoflow.cli.train_recovery import train_recovery

    cli = {
        n: p.default.default
        for n, p in inspect.signature(train_recovery).parameters.items()
        if hasattr(p.default, "default")
    }
    t = TrainOptions()
    for ours, theirs in (
        ("epochs", "epochs"),
        ("steps", "steps"),
        ("patch", "patch"),
        ("batch", "batch"),
        ("lr", "lr"),
        ("val_fraction", "val_fraction"),
        ("patience", "patience"),
        ("seed", "seed"),
    ):
        assert getattr(t, ours) == cli[theirs], ours
    assert ",".join(map(str, t.channels)) == cli["channels"]
    r = RecoverStage()
    assert r.dof == inspect.signature(register).parameters["dof"].default.default
    assert r.pad_mode == inspect.signature(recover).parameters["pad_mode"].default.default
    assert np.isclose(r.max_rotation_deg, inspect.signature(register).parameters["max_rotation"].default.default)


def test_the_module_docstring_example_is_a_valid_manifest(tmp_path):
    import textwrap

    import tomoflow.batch.manifest as mod

    example = mod.__doc__.split("::\n\n", 1)[1].split("\n\n:func:", 1)[0]
    p = tmp_path / "example.yaml"
    p.write_text(textwrap.dedent(example))
    m = load_manifest(p, check_files=False)
    assert [s.name for s in m.scans] == ["tooth", "chip-tiffs"]
    assert m.stages_for(m.scans[1])[-1].kwargs() == {"algorithm": "sirt", "n_iter": 30}
