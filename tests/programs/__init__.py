"""Programs the tests run in a child process (python -m tests.programs.<name> ...): a fresh interpreter
for Airflow/Spark state, a process to kill, or an import-time measurement."""
