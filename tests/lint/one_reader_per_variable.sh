#!/usr/bin/env bash
# Every environment variable is read in one place (a function the rest call), so
# its parsing and its error message cannot drift apart: VGPU_BACKEND was once
# parsed in four files. Fails listing each variable read more than once.
set -euo pipefail
src=${1:?usage: one_reader_per_variable.sh SOURCE_DIR}
twice=$(grep -rhoE 'getenv\("[A-Za-z_0-9]+"\)' "$src/src" | sort | uniq -d)
if [[ -n "$twice" ]]; then
  echo "read in more than one place (give each one reader):" >&2
  for call in $twice; do grep -rn --include='*.cpp' --include='*.hpp' -F "$call" "$src/src" >&2; done
  exit 1
fi
echo "every environment variable has one reader"
