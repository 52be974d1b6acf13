"""spark-submit entry point for the Spark stages: ``spark-submit --py-files mer_code.zip submit.py <job> --ds D``.

The DAG's SparkSubmitOperator tasks run this file on a cluster; it calls the same stage
functions the CLI and the in-process tasks call, with the run's params applied to the config.
``python -m mer.app.spark_submit <job> --ds D`` works the same way without spark-submit.
"""
from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

# The packages executors and the driver import; shipped as one --py-files zip.
PACKAGES = ("mer",)


def package_code(dest_dir: Path, repo_root: Path | None = None) -> Path:
    """Zip the project's Python packages (sources only) into ``dest_dir/mer_code.zip``, atomically."""
    from mer.base.config import REPO_ROOT
    from mer.base.io import atomic_path

    root = Path(repo_root or REPO_ROOT)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / "mer_code.zip"
    with atomic_path(final) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for pkg in PACKAGES:
            for path in sorted((root / pkg).rglob("*.py")):
                if "__pycache__" not in path.parts:
                    zf.write(path, path.relative_to(root).as_posix())
    return final


def main(argv: list[str] | None = None) -> int:
    from mer.app.pipeline import SPARK_JOBS, config_for, run_stage, stage_function
    from mer.base.errors import MerError, validate_ds
    from mer.base.io import jsonable

    parser = argparse.ArgumentParser(prog="mer.app.spark_submit", description=__doc__)
    parser.add_argument("job", choices=sorted(SPARK_JOBS))
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--params", default="{}", help="the DAG run's params as JSON (None = config value)")
    args = parser.parse_args(argv)
    try:
        validate_ds(args.ds)  # before anything touches a path
        cfg = config_for(json.loads(args.params))
        result = run_stage(cfg, args.ds, args.job, stage_function(f"{SPARK_JOBS[args.job]}:run"))
    except MerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as err:
        print(f"error: --params is not JSON: {err}", file=sys.stderr)
        return 2
    print(json.dumps(jsonable(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
