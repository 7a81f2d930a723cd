"""certctl-notify core: model, store, retry policy, channels, configuration and the producer client."""

__version__ = "0.1.0"
