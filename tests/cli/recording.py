"""What the CLI hands the engine, without running a model: ``Engine.from_pretrained`` replaced by a
recorder whose ``generate`` stores its arguments and raises ``Stop`` (the ``recorded`` fixture of
tests/cli/conftest.py)."""

from ltxengine import Engine


class Stop(Exception):
    pass


def record_engine_calls(monkeypatch) -> dict:
    """-> calls: "load" (from_pretrained's keywords, the path and the progress-bar state it saw) and
    "generate" (generate's keywords and the prompt), filled as the CLI makes them."""
    calls = {}

    class Fake:
        def generate(self, prompt, **kw):
            calls["generate"] = dict(kw, prompt=prompt)
            raise Stop

    def fake_load(path, **kw):
        from huggingface_hub.utils import are_progress_bars_disabled
        from transformers.utils import logging
        calls["load"] = dict(kw, path=path, bars=logging.is_progress_bar_enabled(),
                             hub_bars=not are_progress_bars_disabled(), verbosity=logging.get_verbosity())
        return Fake()

    monkeypatch.setattr(Engine, "from_pretrained", fake_load)
    return calls
