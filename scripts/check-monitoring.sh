#!/usr/bin/env bash
# Checks the monitoring files: the Prometheus config, the alert rules and their unit tests, the
# Grafana dashboard and provisioning, and the list of metric names they use.
#   scripts/check-monitoring.sh
# Needs promtool (Debian: apt-get install prometheus; or PROMTOOL=/path/to/promtool) and python3.
# Exits non-zero, saying what is wrong, on the first failing step.
set -euo pipefail

cd "$(dirname "$0")/.."
PROM=docker/prometheus
GRAF=docker/grafana
DASH=$GRAF/dashboards/tributary.json
NAMES=$GRAF/metric_names.txt
PROMTOOL=${PROMTOOL:-promtool}

fail() { echo "check-monitoring: FAILED: $*" >&2; exit 1; }
step() { echo "== $*"; }

command -v "$PROMTOOL" >/dev/null 2>&1 ||
    fail "promtool not found (apt-get install --no-install-recommends prometheus, or set PROMTOOL)"
command -v python3 >/dev/null 2>&1 || fail "python3 not found"
for f in $PROM/prometheus.yml $PROM/alerts.yml $PROM/alerts_test.yml $DASH $NAMES \
    $GRAF/provisioning/datasources/prometheus.yml $GRAF/provisioning/dashboards/tributary.yml; do
    [ -f "$f" ] || fail "$f is missing"
done

step "promtool check config $PROM/prometheus.yml"
"$PROMTOOL" check config $PROM/prometheus.yml || fail "promtool check config $PROM/prometheus.yml"

step "promtool check rules $PROM/alerts.yml"
"$PROMTOOL" check rules $PROM/alerts.yml || fail "promtool check rules $PROM/alerts.yml"

step "promtool test rules $PROM/alerts_test.yml"
"$PROMTOOL" test rules $PROM/alerts_test.yml || fail "promtool test rules $PROM/alerts_test.yml"

step "dashboard $DASH, provisioning, $NAMES"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$DASH" "$PROM/alerts.yml" "$NAMES" "$GRAF/provisioning" "$tmp/dashboard_exprs.yml" <<'PY' ||
import json, re, sys, pathlib

dash_path, rules_path, names_path, prov_dir, exprs_out = sys.argv[1:6]
errors = []

try:
    dash = json.loads(pathlib.Path(dash_path).read_text())
except (OSError, ValueError) as e:
    print(f"{dash_path}: not valid JSON: {e}", file=sys.stderr)
    sys.exit(1)

def all_panels(panels):
    for p in panels:
        yield p
        # collapsed rows keep their panels inside
        yield from all_panels(p.get("panels", []))

panels = list(all_panels(dash.get("panels", [])))
if not panels:
    errors.append(f"{dash_path}: no panels")
if not dash.get("uid") or not dash.get("title"):
    errors.append(f"{dash_path}: the dashboard needs a uid and a title")
variables = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
ids = [p.get("id") for p in panels]
if len(ids) != len(set(ids)):
    errors.append(f"{dash_path}: panel ids are not unique: {ids}")

def ds_ok(ds):
    if isinstance(ds, str):
        return bool(ds)
    return isinstance(ds, dict) and bool(ds.get("uid") or ds.get("type"))

exprs = []
for p in panels:
    where = f"{dash_path}: panel {p.get('id')} {p.get('title')!r}"
    if not p.get("title"):
        errors.append(f"{where}: no title")
    if "gridPos" not in p:
        errors.append(f"{where}: no gridPos")
    if not ds_ok(p.get("datasource")):
        errors.append(f"{where}: no datasource")
    else:
        uid = p["datasource"].get("uid", "") if isinstance(p["datasource"], dict) else p["datasource"]
        for var in re.findall(r"\$\{?(\w+)", uid):
            if var not in variables:
                errors.append(f"{where}: datasource uses ${var}, which is not a dashboard variable")
    targets = [t for t in p.get("targets", []) if isinstance(t, dict) and str(t.get("expr", "")).strip()]
    if not targets:
        errors.append(f"{where}: no target with an expr")
    for t in targets:
        exprs.append((where, t.get("refId"), t["expr"]))
        for var in re.findall(r"\$\{?(\w+)", t["expr"]):
            if not var.startswith("__") and var not in variables:
                errors.append(f"{where}: expr uses ${var}, which is not a dashboard variable")

# The dashboard's PromQL, with Grafana's variables replaced, as a rule file for promtool.
def concrete(expr):
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$__interval", "1m")
    return re.sub(r"\$\{?\w+(:\w+)?\}?", ".*", expr)
with open(exprs_out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (_, ref, e) in enumerate(exprs):
        f.write(f"      - record: dashboard:expr_{i}\n        expr: {json.dumps(concrete(e))}\n")

# Provisioning files name the directory the dashboard is mounted at and a Prometheus source.
prov = pathlib.Path(prov_dir)
ds_text = (prov / "datasources" / "prometheus.yml").read_text()
if "type: prometheus" not in ds_text or "apiVersion: 1" not in ds_text:
    errors.append(f"{prov}/datasources/prometheus.yml: needs apiVersion: 1 and a data source of type: prometheus")
db_text = (prov / "dashboards" / "tributary.yml").read_text()
if "type: file" not in db_text or "path:" not in db_text:
    errors.append(f"{prov}/dashboards/tributary.yml: needs a provider of type: file with options.path")

# Every tributary_ metric name the dashboard and the rules use is in metric_names.txt, and the
# file lists nothing else, sorted (byte order, LC_ALL=C sort), once each.
name_re = re.compile(r"(?<![A-Za-z0-9_])tributary_[a-z0-9_]+")
used = {}
for path in (dash_path, rules_path):
    for n in name_re.findall(pathlib.Path(path).read_text()):
        used.setdefault(n, set()).add(path)
listed_lines = [l.strip() for l in pathlib.Path(names_path).read_text().splitlines() if l.strip()]
listed = set(listed_lines)
for n in sorted(set(used) - listed):
    errors.append(f"{names_path}: {n} (used in {', '.join(sorted(used[n]))}) is not listed")
for n in sorted(listed - set(used)):
    errors.append(f"{names_path}: {n} is listed but used by neither the dashboard nor the rules")
if listed_lines != sorted(listed):
    errors.append(f"{names_path}: not sorted (LC_ALL=C sort -u) or has duplicates")

for e in errors:
    print(e, file=sys.stderr)
if errors:
    sys.exit(1)
print(f"  {len(panels)} panels, {len(exprs)} queries, {len(used)} metric names: OK")
PY
    fail "dashboard / metric name checks (see above)"

step "dashboard PromQL syntax (promtool check rules on the dashboard's queries)"
"$PROMTOOL" check rules "$tmp/dashboard_exprs.yml" >/dev/null ||
    { "$PROMTOOL" check rules "$tmp/dashboard_exprs.yml" || true; fail "a dashboard query is not valid PromQL"; }

echo "check-monitoring: OK"
