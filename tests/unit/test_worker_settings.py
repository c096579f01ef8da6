"""Worker settings: precedence flags > env > file, token file, table, derived config."""

import pytest
from pydantic import ValidationError

from berth.worker.settings import CPU_IMAGE, Settings, default_data_dir, settings_table


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("BERTH_CONFIG_FILE", "BERTH_PORT", "BERTH_HOST", "BERTH_API_TOKEN", "BERTH_ALLOWED_ENV",
                 "BERTH_RESTART_POLICY", "BERTH_DATA_DIR", "BERTH_GPU_DEVICES", "BERTH_API_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    settings = Settings.load()
    assert settings.host == "127.0.0.1" and settings.port == 8001
    assert settings.deployer == "auto" and settings.restart_policy == "never"
    assert settings.gpu_devices == [] and settings.api_token is None
    assert settings.data_dir == default_data_dir()
    assert settings.images["cpu"] == CPU_IMAGE


def test_flags_override_env_override_file(tmp_path, monkeypatch):
    config = tmp_path / "berth.yaml"
    config.write_text("port: 7000\nhost: 0.0.0.0\nrestart_policy: on-failure\nmax_restarts: 5\n")
    monkeypatch.setenv("BERTH_CONFIG_FILE", str(config))
    monkeypatch.setenv("BERTH_PORT", "7100")
    settings = Settings.load(host="127.0.0.2", port=None)
    assert settings.port == 7100  # env beats file
    assert settings.host == "127.0.0.2"  # flag beats file
    assert settings.restart_policy == "on-failure" and settings.max_restarts == 5  # file beats default
    assert Settings.load(port=7200).port == 7200  # flag beats env


def test_config_flag_names_the_file(tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"port": 7300}')
    assert Settings.load(config_file=config).port == 7300


def test_unknown_key_in_file_is_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("prot: 1\n")
    with pytest.raises(ValidationError) as info:
        Settings.load(config_file=config)
    assert "prot" in str(info.value)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(ValueError, match="cannot be read"):
        Settings.load(config_file=tmp_path / "nope.yaml")


def test_token_file_and_secret(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    settings = Settings.load(api_token_file=token)
    assert settings.api_token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings.model_dump())


def test_token_and_file_together_refused(tmp_path):
    token = tmp_path / "token"
    token.write_text("x\n")
    with pytest.raises(ValidationError, match="not both"):
        Settings.load(api_token="y", api_token_file=token)


def test_allowed_env_comma_separated(monkeypatch):
    monkeypatch.setenv("BERTH_ALLOWED_ENV", "LD_PRELOAD, PYTHONPATH")
    assert Settings.load().allowed_env == ["LD_PRELOAD", "PYTHONPATH"]


def test_gpu_devices_from_env_json(monkeypatch):
    monkeypatch.setenv("BERTH_GPU_DEVICES", '[{"index": 0, "uuid": "GPU-a", "vendor": "NVIDIA"}]')
    devices = Settings.load().gpu_devices
    assert devices[0].uuid == "GPU-a" and devices[0].vendor == "nvidia"


@pytest.mark.parametrize("field,value", [("port", 0), ("instance_port_range", "9-1"), ("ray_band_size", 5)])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValidationError) as info:
        Settings.load(**{field: value})
    assert field in str(info.value)


def test_to_berth_config_and_worker(tmp_path):
    settings = Settings.load(data_dir=tmp_path, worker_ip="10.0.0.5", worker_id=3, entrypoint=["python", "x.py"])
    config = settings.to_berth_config()
    assert config.cache_dir == str(tmp_path / "cache") and config.data_dir == str(tmp_path)
    assert config.entrypoint == ["python", "x.py"]
    worker = settings.to_worker()
    assert worker.ip == "10.0.0.5" and worker.id == 3 and worker.gpu_devices == []


def test_backend_version_drops_local_tag():
    version = Settings.load().resolved_backend_version()
    assert version is None or "+" not in version
    assert Settings.load(backend_version="0.11.0").resolved_backend_version() == "0.11.0"


def test_settings_table_lists_every_field_once():
    table = settings_table()
    for name in Settings.model_fields:
        assert table.count(f"| `{name}` |") == 1
        assert f"`BERTH_{name.upper()}`" in table
    assert "/var/lib/berth" in table
