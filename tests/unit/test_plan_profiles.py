"""Two planning profiles: ``cluster`` (GPUStack's rules, for what a scheduler sends) and
``exact`` (the user's options as given, plus only what berth needs to reach the server)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from berth.cli import app
from berth.schemas import DeploymentSpec
from tests.support.specs import BASE, make_plan

LONG = {"max_position_embeddings": 131072}


@pytest.fixture
def long_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LONG))
    return str(tmp_path)


def test_cluster_is_the_default_and_applies_gpustacks_rules(long_model):
    plan = make_plan(model_path=long_model, instance={"gpu_indexes": [0, 1]})
    assert plan.profile == "cluster"
    assert plan.args == [
        long_model, "--max-model-len", "8192", "--tensor-parallel-size", "2", "--enable-prompt-tokens-details",
        "--host", "10.0.0.1", "--port", "40000", "--served-model-name", "m",
    ]
    assert plan.env["OMP_NUM_THREADS"] == "1"


def test_exact_runs_the_options_as_given(long_model):
    plan = make_plan(
        profile="exact",
        model_path=long_model,
        model={"backend_version": "0.16.0", "env": {"MY": "1"}, "backend_parameters": ["--dtype=half"],
               "categories": ["image"]},
        instance={"gpu_indexes": [0, 1]},
        config={"cache_dir": "/nonexistent/cache"},
    )
    assert plan.profile == "exact"
    assert plan.args == [long_model, "--dtype=half", "--host", "10.0.0.1", "--port", "40000", "--served-model-name", "m"]
    assert plan.injected == ["--host", "10.0.0.1", "--port", "40000", "--served-model-name", "m"]
    assert plan.env == {"MY": "1"}
    assert plan.served_names == ["m"]


def test_exact_keeps_the_users_port_and_name():
    plan = make_plan(profile="exact", model={"backend_parameters": ["--port 9000 --served-model-name a b"]})
    assert plan.args == ["/models/org/m", "--port", "9000", "--served-model-name", "a", "b", "--host", "10.0.0.1"]
    assert plan.served_names == ["a", "b"]


def test_exact_skips_ascend_tuning_but_keeps_what_the_spec_asks_for():
    plan = make_plan(
        profile="exact",
        model={"speculative_config": {"enabled": True, "algorithm": "ngram"}},
        worker={"gpu_devices": [{"index": 0, "vendor": "ascend", "arch_family": "Ascend310P3"}]},
    )
    assert plan.args == [
        "/models/org/m", "--speculative-config", '{"method": "ngram"}',
        "--host", "10.0.0.1", "--port", "40000", "--served-model-name", "m",
    ]
    assert plan.env == {}


def test_an_unknown_profile_is_refused_by_name():
    with pytest.raises(ValueError, match="profile"):
        DeploymentSpec.model_validate({**BASE, "profile": "loose"})


def test_berth_plan_shows_the_profile(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**BASE, "profile": "exact", "model": {**BASE["model"], "extra_field": 1}}))
    runner = CliRunner()
    data = json.loads(runner.invoke(app, ["plan", str(spec), "--format", "json"]).output)
    assert data["profile"] == "exact" and data["served_names"] == ["m"]
    assert data["warnings"] == ["model.extra_field is not a field berth uses; ignored"]
    text = runner.invoke(app, ["plan", str(spec)]).output
    assert "profile=exact" in text and "model.extra_field is not a field berth uses" in text
