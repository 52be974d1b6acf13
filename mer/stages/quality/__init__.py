

# The gates by name; here, not in gates.py, so the CLI offers them without importing pyarrow/pandas.
STAGES = ("raw", "training", "embeddings")
