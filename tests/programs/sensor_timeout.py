"""Late data: the raw sensor waits, re-checks, then fails with RawInputTimeout naming what is missing."""
import threading, time
from mer.base.errors import MerError
from mer.app.raw_sensor import RawPartitionsSensor
class TI:
    try_number = 1
    max_tries = 1
ctx = {"params": {}, "ti": TI(), "task_instance": TI()}
pokes = []
class Counting(RawPartitionsSensor):
    def poke(self, context):
        pokes.append(time.time())
        return super().poke(context)
s = Counting(task_id="wait_for_raw", ds="2026-01-15", timeout=0.5, poke_interval=0.1, mode="poke")
try:
    s.execute(ctx)
    print("@@ no error")
except MerError as e:
    print("@@", type(e).__name__, "|", isinstance(e, MerError), "|", len(pokes), "|", e)

# The data lands while the sensor waits: it succeeds.
from mer.app.pipeline import config_for
from tests.raw_fixture import write_raw
def land():
    time.sleep(0.4)
    write_raw(config_for({}))
pokes.clear()
threading.Thread(target=land).start()
s = Counting(task_id="wait_for_raw", ds="2026-01-15", timeout=30, poke_interval=0.1, mode="poke")
s.execute(ctx)
print("@@ landed after", len(pokes), "pokes")
