"""trcgl: an executable companion to TRCGL-Net (arXiv 2607.00975).

One module per idea of the paper; the book's chapters import them. Start with
:func:`trcgl.config.load_config` and :func:`trcgl.runtime.select_device`.
"""
import warnings

from .config import Config, ConfigError, load_config

# Libraries we import use tqdm.auto, which warns in a notebook without ipywidgets; the book's
# pages show plain-text progress bars instead, so that one warning is noise on every page.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "load_config", "__version__"]
