"""invoke entry point: the same task collection as the ``paradev`` console script."""

from paradev.tasks import ns

__all__ = ["ns"]
