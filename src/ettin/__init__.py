"""ettin: paired encoder-only and decoder-only language models with one architecture and one recipe."""

from ettin.config import ModelConfig, preset

__version__ = "0.1.0"
__all__ = ["ModelConfig", "preset", "EttinModel", "from_pretrained"]


def __getattr__(name):  # keep `import ettin` light: torch-heavy pieces load on first use
    if name == "EttinModel":
        from ettin.model import EttinModel

        return EttinModel
    if name == "from_pretrained":
        from ettin.hf import from_pretrained

        return from_pretrained
    raise AttributeError(name)
