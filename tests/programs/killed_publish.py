"""Publish, killed with SIGKILL in the middle of the uploads (tests/test_faults_publish.py)."""
import os, signal, sys
from mer.stages.index import publish
from mer.stages.index.storage import Store
from mer.base.config import MerConfig

cfg = MerConfig.model_validate_json(sys.argv[1])
real, calls = Store.upload_file, []

def upload_then_die(self, path, key, sha256):
    if len(calls) == 4:
        os.kill(os.getpid(), signal.SIGKILL)  # no finally, no atexit: the process just stops
    calls.append(key)
    return real(self, path, key, sha256)

Store.upload_file = upload_then_die
publish.run(cfg, sys.argv[2], sys.argv[3])
