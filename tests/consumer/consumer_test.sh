#!/usr/bin/env bash
# Installs BUILD_DIR into a temporary prefix, then configures, builds and runs
# tests/consumer against it with find_package(aptvgpu): the package config, its
# dependencies and the installed headers work for someone outside the project.
#
#   consumer_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/tests/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
out=$("$work/build/consumer")
[[ "$out" == "sim:0 20 GB" ]] || { echo "consumer printed '$out'" >&2; exit 1; }
echo "consumer: $out"
