"""The HTML run report: one self-contained page per run at ``<run_dir>/report.html``."""
