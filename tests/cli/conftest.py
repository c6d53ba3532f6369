import pytest

from tests.cli.recording import record_engine_calls


@pytest.fixture
def recorded(monkeypatch):
    """Engine.from_pretrained replaced: records its and generate's arguments, then stops (raises Stop)."""
    return record_engine_calls(monkeypatch)
