"""Run mer_daily with dag.test() (stage tasks marked success by pattern) the way the demo does: output
captured to the log file argv[4], a line per task on the terminal; print task states as @@JSON."""
import json, sys
from pathlib import Path
from mer.app.demo import captured_output, migrate_db, run_dag
log = Path(sys.argv[4])
with captured_output(log) as console:
    migrate_db()
    states = run_dag(sys.argv[1], json.loads(sys.argv[2]), mark_success_pattern=sys.argv[3], console=console, log_path=log)
print("@@" + json.dumps(states))
