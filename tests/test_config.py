import importlib.util
import os
import re
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import ValidationError

from graywave.config import Settings, prepare_prefect_environment, validate_wave_name
from graywave.errors import BackendUnavailable

ROOT = Path(__file__).parents[1]


def test_defaults_are_the_embedded_deployment(monkeypatch):
    for key in list(os.environ):
        if key.startswith("GRAYWAVE_"):
            monkeypatch.delenv(key)
    settings = Settings()
    assert (settings.blob_url, settings.lake_url, settings.timezone) == ("./data/blobs", "./data/lake", "UTC")
    assert (settings.device, settings.bins, settings.jpeg_quality) == ("auto", 16, 90)


def test_environment_variables_configure_and_are_validated(monkeypatch):
    monkeypatch.setenv("GRAYWAVE_TIMEZONE", "Europe/Rome")
    monkeypatch.setenv("GRAYWAVE_BINS", "32")
    assert (Settings().timezone, Settings().bins) == ("Europe/Rome", 32)
    monkeypatch.setenv("GRAYWAVE_BINS", "10")
    with pytest.raises(ValidationError, match="power of two"):
        Settings()
    monkeypatch.setenv("GRAYWAVE_BINS", "16")
    monkeypatch.setenv("GRAYWAVE_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValidationError, match="unknown time zone"):
        Settings()


def test_prefect_stays_local_and_quiet(monkeypatch, tmp_path):
    for key in ("PREFECT_HOME", "DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        monkeypatch.delenv(key, raising=False)
    prepare_prefect_environment(Settings(prefect_home=tmp_path / "prefect"))
    assert os.environ["PREFECT_HOME"] == str(tmp_path / "prefect")
    assert os.environ["DO_NOT_TRACK"] == "1"  # the cross-tool standard that Prefect's client honours
    from prefect.settings import Settings as PrefectSettings

    prefect = PrefectSettings()  # read from the environment now, through Prefect's public settings
    assert prefect.home == tmp_path / "prefect"
    assert prefect.server.analytics_enabled is False


def test_prefects_state_folder_is_made(monkeypatch, tmp_path):
    """On a fresh checkout (no data folder) a wave on Prefect's temporary server failed: that server
    cannot create its database in a folder that is not there."""
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    prepare_prefect_environment(Settings(prefect_home=tmp_path / "data" / "prefect"))
    assert (tmp_path / "data" / "prefect").is_dir()
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "operators" / "choice"))
    prepare_prefect_environment(Settings())
    assert (tmp_path / "operators" / "choice").is_dir()
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "a-file" / "prefect"))
    with pytest.raises(BackendUnavailable, match="PREFECT_HOME"):
        prepare_prefect_environment(Settings())


def test_operator_settings_win(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "somewhere-else"))
    prepare_prefect_environment(Settings(prefect_home=tmp_path))
    assert os.environ["PREFECT_HOME"] == str(tmp_path / "somewhere-else")


@pytest.mark.parametrize("name", ["morning", "evening", "w1000", "catch-up_2"])
def test_wave_names(name):
    assert validate_wave_name(name) == name


@pytest.mark.parametrize("name", ["1000", "", "a/b", "x" * 33, "has space"])
def test_bad_wave_names(name):
    with pytest.raises(ValueError):
        validate_wave_name(name)


def test_the_batch_runner_in_force(monkeypatch):
    assert Settings().batch_runner.startswith("threads of this process")
    monkeypatch.setenv("GRAYWAVE_DASK_WORKERS", "3")
    assert Settings().batch_runner == "local dask cluster of 3 worker processes"
    monkeypatch.setenv("GRAYWAVE_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    with pytest.raises(ValidationError, match="not both"):
        Settings()
    monkeypatch.delenv("GRAYWAVE_DASK_WORKERS")
    assert Settings().batch_runner == "dask cluster at tcp://10.0.0.5:8786"


def _reference_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_is_current():
    """docs/configuration.md is generated from the fields' descriptions: a setting added, removed or
    described anew without running scripts/gen_config_docs.py leaves it stale."""
    reference = (ROOT / "docs" / "configuration.md").read_text()
    assert reference == _reference_generator().render(), (
        "docs/configuration.md is stale: run scripts/gen_config_docs.py"
    )


def test_every_setting_is_in_the_configuration_reference():
    """The prober found GRAYWAVE_API_INLINE_REPROCESS_MAX missing from the hand-kept table: an operator
    reads the reference, not the code. Each setting's row names its variable, its default and a meaning."""
    reference = (ROOT / "docs" / "configuration.md").read_text()
    rows = {
        variable: (default, meaning)
        for variable, default, meaning in re.findall(
            r"^\| `(GRAYWAVE_[A-Z0-9_]+)` \| ([^|]+) \|[^|]*\| (.+) \|$", reference, re.MULTILINE
        )
    }
    variables = {f"GRAYWAVE_{name.upper()}" for name in Settings.model_fields}
    assert sorted(variables - rows.keys()) == []
    assert sorted(rows.keys() - variables) == []
    for name, field in Settings.model_fields.items():
        default, meaning = rows[f"GRAYWAVE_{name.upper()}"]
        assert meaning.strip(), name
        if isinstance(field.default, int | float) and not isinstance(field.default, bool):
            number = int(field.default) if float(field.default).is_integer() else field.default
            assert re.search(rf"(?<![0-9.]){number}(?![0-9])", default), (name, default)


def test_every_setting_has_a_description():
    missing = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert missing == []
