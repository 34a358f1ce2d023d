"""tokred_train."""
