"""Run mer_daily with dag.test() (stage tasks marked success by pattern); print task states as @@JSON."""
import json, sys
from mer.app.demo import migrate_db, run_dag
migrate_db()
states = run_dag(sys.argv[1], json.loads(sys.argv[2]), mark_success_pattern=sys.argv[3])
print("@@" + json.dumps(states))
