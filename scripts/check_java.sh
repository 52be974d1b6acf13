#!/usr/bin/env bash
# Spark 4 needs Java 17+. Fail early with a message a person can act on.
set -euo pipefail
if ! command -v java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ]; then
  echo "error: Java 17 is required by Spark but no 'java' is on PATH (and JAVA_HOME is unset)." >&2
  echo "       Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless ; macOS: brew install openjdk@17" >&2
  exit 1
fi
JAVA_BIN="${JAVA_HOME:+$JAVA_HOME/bin/}java"
ver=$("$JAVA_BIN" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [ -z "$ver" ] || [ "$ver" -lt 17 ]; then
  echo "error: Spark needs Java 17 or newer; found '$("$JAVA_BIN" -version 2>&1 | head -1)'." >&2
  exit 1
fi
