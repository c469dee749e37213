"""Typed experiment parameters: every spec's ``params`` and ``quick`` fit its experiment's ``Params``; a
missing, unknown or mistyped parameter is a ConfigError naming the spec file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from contract.config import ConfigError
from experiments.framework import SPEC_DIR, list_experiments, load_spec, params_model, validated_params


@pytest.mark.parametrize("name", list_experiments())
def test_every_spec_fits_its_params_model(name: str) -> None:
    spec = load_spec(name)
    model = params_model(name)
    assert model is not None, f"experiments/{name}.py declares no Params"
    assert set(model.model_fields) == set(spec.params)
    full, quick = validated_params(spec, False), validated_params(spec, True)
    assert set(full) == set(quick) == set(spec.params)


def _spec(tmp_path: Path, name: str, change) -> Path:  # noqa: ANN001 - a callable editing the YAML data
    data = yaml.safe_load((SPEC_DIR / f"{name}.yaml").read_text())
    change(data)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d["params"].update(duratoin_s=5), r"params: duratoin_s: Extra inputs are not permitted"),
        (lambda d: d["params"].pop("dns_ttl"), r"params: dns_ttl: Field required"),
        (lambda d: d["params"].update(rate_per_client="fast"), r"params: rate_per_client: .*valid number"),
        (lambda d: d["params"].update(methods=["anycast", "carrier-pigeon"]), r"params: methods\[1\]: Input should be 'anycast', 'dns' or 'redirect'"),
        (lambda d: d["quick"].update(duration_s=-1), r"quick: duration_s: .*greater than 0"),
    ],
)
def test_a_bad_parameter_names_the_file_and_the_field(tmp_path: Path, change, why: str) -> None:  # noqa: ANN001
    p = _spec(tmp_path, "selection", change)
    with pytest.raises(ConfigError, match=why) as e:
        load_spec(p)
    assert str(p) in str(e.value)


def test_validated_params_coerce_as_the_model_says(tmp_path: Path) -> None:
    p = _spec(tmp_path, "selection", lambda d: d["params"].update(alpha="0.9", duration_s="12"))
    params = validated_params(load_spec(p), False)
    assert params["alpha"] == 0.9 and params["duration_s"] == 12
