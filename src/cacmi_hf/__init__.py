"""cacmi_hf: CACMI dense video captioning for the Hugging Face ecosystem."""

from .configuration_cacmi import CACMIConfig

__version__ = "0.1.0"

__all__ = ["CACMIConfig", "__version__"]
