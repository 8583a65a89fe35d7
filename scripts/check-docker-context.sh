#!/usr/bin/env bash
# Checks that docker/Dockerfile's build stage copies everything the workspace needs: it lays out
# a directory with exactly the files its COPY lines take from the repository and asks cargo to
# read the workspace there (every member present, every manifest valid; offline, no build; the
# lock file itself is checked by `cargo test --locked`). No Docker engine runs here, and
# `docker-compose config` does not read the Dockerfile, so without this a missing COPY (a new
# workspace crate) would only show when a user builds the image.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
# COPY <src>... <dest> of the build stage (before the second FROM); --from copies are skipped.
while read -r line; do
  read -ra words <<<"$line"
  [[ "${words[1]}" == --* ]] && continue
  dest=${words[-1]}
  for src in "${words[@]:1:${#words[@]}-2}"; do
    if [[ "$dest" == */ || "$dest" == ./ ]]; then
      cp -r "$REPO/$src" "$ctx/$dest"
    else
      mkdir -p "$ctx/$(dirname "$dest")"
      cp -r "$REPO/$src" "$ctx/$dest"
    fi
  done
done < <(awk '/^FROM/ { n++ } n == 1 && /^COPY / { print }' "$REPO/docker/Dockerfile")
if ! out=$(cd "$ctx" && cargo metadata --no-deps --offline --format-version 1 2>&1 >/dev/null); then
  echo "check-docker-context: docker/Dockerfile's build context does not make a workspace:" >&2
  echo "$out" | tail -5 >&2
  exit 1
fi
echo "check-docker-context: the Dockerfile copies every workspace member"
