"""tokred_models."""
