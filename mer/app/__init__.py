"""App layer: the CLI, the demo, run records, launchers (spark-submit, torchrun), the raw sensor, local S3 and the report."""
