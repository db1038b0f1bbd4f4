"""cacmi_hf: CACMI dense video captioning for the Hugging Face ecosystem."""

from transformers import AutoConfig, AutoModel

from .configuration_cacmi import CACMIConfig
from .modeling_cacmi import (
    CACMIDenseCaptioningOutput,
    CACMIForDenseCaptioning,
    CACMIModel,
    CACMIModelOutput,
    CACMIPreTrainedModel,
)
from .pipeline_dense_video_captioning import DenseVideoCaptioningPipeline
from .pipeline_dense_video_captioning import register as _register_pipeline
from .processing_cacmi import CACMIProcessor, CACMIVideoProcessor
from .processing_cacmi import register as _register_processor

__version__ = "0.1.0"


def _register() -> None:
    """Make the Auto classes know "cacmi" and make saved folders carry their own code."""
    AutoConfig.register("cacmi", CACMIConfig, exist_ok=True)
    # AutoModel resolves to the captioning model: that is what pipelines and users load.
    AutoModel.register(CACMIConfig, CACMIForDenseCaptioning, exist_ok=True)
    CACMIConfig.register_for_auto_class()
    CACMIForDenseCaptioning.register_for_auto_class("AutoModel")
    _register_processor()
    _register_pipeline()


_register()

__all__ = [
    "CACMIConfig",
    "CACMIDenseCaptioningOutput",
    "CACMIForDenseCaptioning",
    "CACMIModel",
    "CACMIModelOutput",
    "CACMIPreTrainedModel",
    "CACMIProcessor",
    "CACMIVideoProcessor",
    "DenseVideoCaptioningPipeline",
    "__version__",
]
