"""steadytune: measurable, stable fine-tuning of pretrained transformer encoders on small datasets."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("steadytune")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"
