#!/usr/bin/env bash
# Installs NVIDIA's perf_analyzer (Triton's load generator, the one genai-perf drives) into
# .venv/perf_analyzer/, without root: `bash benchmarks/install_perf_analyzer.sh`, then
# `.venv/perf_analyzer/perf_analyzer -m mobilenet_v2 -u 127.0.0.1:8001 -i grpc ...` (README).
#
# Where it comes from: the tritonclient 2.48.0 wheel for Linux x86_64 still carries the binary
# (2.52 and later need glibc 2.38; 2.66 and later carry none); it links libb64 (Debian's
# libb64-0d) and libcudart.so.12 (PyPI's nvidia-cuda-runtime-cu12; loaded, not used: no GPU is
# needed). Each goes into .venv/perf_analyzer/lib, and a wrapper script sets LD_LIBRARY_PATH.
# tests/test_perf_analyzer.py runs it against dwserve (skipped without it; CI installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${PERF_ANALYZER_DIR:-.venv/perf_analyzer}
PIP=${PIP:-.venv/bin/pip}
[ -x "$PIP" ] || PIP="python3 -m pip"
if [ "$(uname -m)" != x86_64 ]; then
    echo "install_perf_analyzer: the tritonclient wheel's binary is x86_64 only" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$DEST" && mkdir -p "$DEST/lib"

$PIP download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 -d "$work" "tritonclient==2.48.0"
$PIP download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 -d "$work" "nvidia-cuda-runtime-cu12>=12,<13"
python3 - "$work" "$DEST" <<'EOF'
import glob, os, sys, zipfile
work, dest = sys.argv[1:]
wanted = {"tritonclient": ("/bin/perf_analyzer", dest + "/perf_analyzer.bin"),
          "nvidia_cuda_runtime": ("/lib/libcudart.so.12", dest + "/lib/libcudart.so.12")}
for prefix, (suffix, target) in wanted.items():
    (wheel,) = glob.glob(f"{work}/{prefix}*.whl")
    with zipfile.ZipFile(wheel) as z:
        (member,) = [n for n in z.namelist() if n.endswith(suffix)]
        with z.open(member) as src, open(target, "wb") as out:
            out.write(src.read())
    os.chmod(target, 0o755)
EOF

if ! ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'; then   # not installed system-wide: Debian's package, unpacked
    (cd "$work" && apt-get download libb64-0d >/dev/null 2>&1) || {
        echo "install_perf_analyzer: libb64.so.0d is missing; install Debian's libb64-0d" >&2; exit 1; }
    dpkg-deb -x "$work"/libb64-0d_*.deb "$work/deb"
    cp "$work"/deb/usr/lib/*/libb64.so.0d* "$DEST/lib/"
fi

cat > "$DEST/perf_analyzer" <<'EOF'
#!/usr/bin/env bash
here=$(cd "$(dirname "$0")" && pwd)
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/perf_analyzer.bin" "$@"
EOF
chmod +x "$DEST/perf_analyzer"
"$DEST/perf_analyzer" --version
