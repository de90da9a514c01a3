"""The one exception a bad config raises (re-exported by `stoix.utils.config`)."""


class ConfigError(ValueError):
    """A user-facing, one-line reason why a config cannot run."""
