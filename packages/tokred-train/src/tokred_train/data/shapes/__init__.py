"""The embedded shapes set: the synthetic images and their texts (`dataset`), their
samples of both tasks (`samples`), and the deterministic detector that scores generated
images (`detector`)."""
