"""The process: the workers supervisor, twistd services, SO_REUSEPORT listeners, the embedded Redis."""
