#!/usr/bin/env bash
# Stage 2 on a GPU machine in a few minutes: the figures of docs/upstreams.md "Throughput at scale".
#
#     bench/gpu_check.sh [--fraction 0.05] [--workers N] [--out DIR]
#     bench/gpu_check.sh --device cpu --large tiny --base tiny --fraction 0.0005   # the script itself, on a CPU
#
# Uses only the repository and its .venv (installs nothing, no network).  Runs, each under its own time limit:
#   1. bench/stage2_scale.py: HuBERT-Large (random weights), bf16 autocast, padded policy;
#   2. bench/stage2_scale.py: HuBERT-Base, float32, its exact equal_length policy (+ padded for comparison);
#   3. pytest tests/test_gpu.py (CUDA equal to CPU, autocast errors, decoding workers, two jobs on one GPU);
#   4. utils/run.py --gpu 1 JOB=1:2 ... etser.features.extract job --ngpu 1 (--nj 2 --ngpu 1 on one GPU) + merge;
# then prints one summary block (also in DIR/summary.txt; figures in DIR/*.json, logs in DIR/*.log).
# Goals (one H100/H200, 16 cores): projected full corpus <= 2 min HuBERT-Large bf16 padded, <= 4 min
# HuBERT-Base exact; pipeline / bare forward >= 0.9; host memory independent of the corpus size.
set -u -o pipefail

fraction=0.05
device=cuda
large=hubert_large
base=hubert_base
workers=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
out=${OUT:-exp/gpu_check}
while [ $# -gt 0 ]; do
    case $1 in
        --fraction) fraction=$2; shift 2 ;;
        --workers) workers=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --device) device=$2; shift 2 ;;
        --large) large=$2; shift 2 ;;
        --base) base=$2; shift 2 ;;
        *) echo "usage: $0 [--fraction F] [--workers N] [--out DIR] [--device D] [--large ARCH] [--base ARCH]" >&2
           exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "${py}" ] || py=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="${PWD}:${PWD}/local${PYTHONPATH:+:${PYTHONPATH}}"
mkdir -p "${out}"
work=${TMPDIR:-/tmp}/etser_gpu_check
mkdir -p "${work}"
status=()
t_all=${SECONDS}

step() {  # step NAME LIMIT_S command...: run with a time limit, log to out/NAME.log, record the outcome
    local name=$1 limit=$2 t=${SECONDS}
    shift 2
    echo "== ${name} (limit ${limit} s): $*" >&2
    timeout "${limit}" "$@" > "${out}/${name}.log" 2>&1
    local rc=$?
    status+=("${name}: exit ${rc} in $(( SECONDS - t )) s")
    tail -n 12 "${out}/${name}.log" >&2
    return 0
}

nvidia-smi -L > "${out}/gpus.txt" 2>&1 || true
"${py}" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" \
    >> "${out}/gpus.txt" 2>&1

step large 150 "${py}" bench/stage2_scale.py --arch "${large}" --autocast bf16 --policy padded --device "${device}" \
    --fraction "${fraction}" --num_workers "${workers}" --num_threads 2 --work "${work}" --json "${out}/large.json"
step base 150 "${py}" bench/stage2_scale.py --arch "${base}" --device "${device}" --compare_padded \
    --fraction "${fraction}" --num_workers "${workers}" --num_threads 2 --work "${work}" --json "${out}/base.json"
if [ $(( SECONDS - t_all )) -lt 240 ]; then  # time left: HuBERT-Large with 4x larger batches too
    step large_b240 120 "${py}" bench/stage2_scale.py --arch "${large}" --autocast bf16 --policy padded \
        --device "${device}" --max_seconds 240 --max_items 64 --fraction "${fraction}" --num_workers "${workers}" \
        --num_threads 2 --work "${work}" --json "${out}/large_b240.json"
fi
step test_gpu 150 "${py}" -m pytest -q -x -s tests/test_gpu.py -k "not run_sh"

# --nj 2 --ngpu 1 through the local launcher, on the benchmark's corpus and its tiny model.
step tiny_model 60 "${py}" -c "
import sys; sys.path.insert(0, 'bench'); import stage2_scale as s, yaml
from pathlib import Path
w = Path('${work}')
_, ckpt = s.make_model('tiny', w / 'models' / 'tiny')
s.make_corpus(w / 'corpus_0.01_0', 0.01)
(w / 'tiny.yaml').write_text(yaml.safe_dump({'name': 'hf_hubert_custom', 'ckpt': str(ckpt), 'batch': {'policy': 'padded'}}))
print('ok')"
rm -rf "${work}/nj2"
step nj2_ngpu1 120 bash -c "${py} utils/run.py --gpu 1 JOB=1:2 ${work}/nj2/log/extract.JOB.log \
    ${py} -m etser.features.extract job --config ${work}/tiny.yaml --data ${work}/corpus_0.01_0/data --dir ${work}/nj2 \
    --nj 2 --job JOB --ngpu 1 --num_threads 2 && \
    ${py} -m etser.features.extract merge --config ${work}/tiny.yaml --data ${work}/corpus_0.01_0/data --dir ${work}/nj2 --nj 2 && \
    grep -h -e CUDA_VISIBLE_DEVICES -e 'extract .* job' ${work}/nj2/log/extract.*.log && \
    grep -h '\"device\"' ${work}/nj2/split2/done.*"
cp "${work}"/nj2/log/extract.*.log "${out}/" 2>/dev/null || true

"${py}" - "${out}" "${SECONDS}" "${t_all}" "${status[@]}" <<'EOF' | tee "${out}/summary.txt"
import json, sys
from pathlib import Path

out, now, t0, status = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
print("==== gpu_check summary ====")
print((out / "gpus.txt").read_text().strip())
goals = {"large": 120, "large_b240": 120, "base": 240}
for name in ("large", "large_b240", "base"):
    p = out / f"{name}.json"
    if not p.is_file():
        if (out / f"{name}.log").is_file() or name != "large_b240":
            print(f"{name}: no figures (see {out}/{name}.log)")
        continue
    f = json.loads(p.read_text())
    proj = f["projected_full_seconds"]
    print(f"{name}: {f['arch']} {f['policy']} autocast {f['autocast']} batch {f['max_items']}/{f['max_seconds']:g} s, {f['utts']} utts ({f['audio_seconds'] / 3600:.2f} h), "
          f"{f['num_workers']} workers: {f['utts_per_second']:.1f} utts/s, {f['audio_seconds_per_second']:.0f} audio s/s, "
          f"forward share {f['forward_share']:.2f}, pipeline/bare {f['pipeline_over_bare']:.2f} "
          f"({f['pipeline_over_bare_after_startup']:.2f} after a first batch at {f['startup_seconds']:.1f} s), "
          f"{f['items_per_batch']:.1f} segments/batch, padding {100 * f['padding_share']:.0f} %, "
          f"peak GPU {f['peak_gpu_mb'] or 0:.0f} MB, peak host {f['peak_host_mb']:.0f} MB (+{f['host_growth_mb']:.0f} MB), "
          f"projected full corpus {proj:.0f} s (goal <= {goals[name]} s: {'met' if proj <= goals[name] else 'NOT met'}; "
          f"bare forward {f['projected_full_bare_seconds']:.0f} s)"
          + (f", padded batches {f['padded_speedup']:.2f}x faster (inexact)" if "padded_speedup" in f else ""))
for line in (out / "test_gpu.log").read_text().splitlines() if (out / "test_gpu.log").is_file() else []:
    if " relative" in line or " passed" in line or " failed" in line or "error" in line.lower():
        print("test_gpu:", line.strip())
for s in status:
    print("step", s)
print(f"total {now - t0} s")
EOF
