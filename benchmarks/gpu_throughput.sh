#!/usr/bin/env bash
# benchmarks/throughput.py at real size on a bare GPU machine (torch + numpy, no registry), from the repo root:
#     OUT=/path/to/out bash benchmarks/gpu_throughput.sh      # under 4 min on one H200 (budget 185 s + setup)
# The wheels come from ../shared/gpu-bench copied to .gpu/ (as for gpu-bench): pydantic (+core,
# annotated-types, typing-inspection) and diffusers first on the path; requests & co. (diffusers checks
# them at import) last, used only where the machine has none; typing_extensions shadowed only if needed.
# Writes $OUT/throughput.log (all output) and $OUT/throughput.json (rows, rewritten after each group).
set -u
OUT="${OUT:-/tmp/throughput}"
PY="${PY:-python3}"
WHL="${WHL_DIR:-.gpu}"
SITE="${SITE:-/tmp/throughput-site}"
BUDGET="${BUDGET_S:-185}"
mkdir -p "$OUT"
{
    rm -rf "$SITE" "$SITE-append"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHL"/whl/*.whl
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE-append" "$WHL"/whl_append/*.whl
    export PYTHONPATH="$SITE:$PWD/platform" PYTHONUNBUFFERED=1
    if ! "$PY" -c "import pydantic" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHL"/whl_shadow/*.whl
    fi
    timeout -k 5 $((BUDGET + 35)) "$PY" - "$SITE-append" "$BUDGET" "$OUT/throughput.json" "$@" <<'EOF'
import runpy
import sys

append, budget, out, *extra = sys.argv[1:]
sys.path.append(append)
sys.argv = ["benchmarks/throughput.py", "--preset", "wan2.1-t2v-1.3b", "--device", "cuda", "--repeats", "1",
            "--budget", budget, "--json", out, *extra]
runpy.run_path("benchmarks/throughput.py", run_name="__main__")
EOF
    echo "== throughput.py exit code $?"
} 2>&1 | tee "$OUT/throughput.log"
