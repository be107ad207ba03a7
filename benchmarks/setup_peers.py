"""Create one virtual environment per peer group under ``.bench-venvs/``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/setup_peers.py            # all groups
    .venv/bin/python benchmarks/setup_peers.py torch aim  # some groups
    .venv/bin/python benchmarks/setup_peers.py --list     # show groups and state

Peers whose dependencies conflict live in separate environments; peers that
share torch share one environment so torch (about 1 GB installed) is there once.
Each group's pip output goes to ``.bench-venvs/<group>.log``; a group whose
install fails is left without its ``READY`` marker and the harness reports its
peers as skipped with the last line of that log. Re-running skips groups that
are already ready (``--force`` rebuilds them).

torch is always pinned to the CPU build ``torch==2.13.0`` through a constraints
file, so no resolver step can pull a multi-GB CUDA build.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / ".bench-venvs"
TORCH_PIN = "torch==2.13.0"

# group -> list of pip install steps (each step is one `pip install` call).
GROUPS: dict[str, list[list[str]]] = {
    # test-tube 0.7.5 needs torch installed first; SummaryWriter and
    # Lightning's CSVLogger need torch too, so they share the environment.
    "torch": [
        [TORCH_PIN],
        ["numpy", "pillow", "tensorboard", "test-tube==0.7.5", "lightning-fabric"],
    ],
    "tensorboardx": [["numpy", "pillow", "tensorboardX"]],
    "mlflow": [["numpy", "pillow", "mlflow"]],
    "wandb": [["numpy", "pillow", "wandb"]],
    "aim": [["numpy", "pillow", "aim"]],
    "dvclive": [["numpy", "pillow", "dvclive"]],
}

# Distributions whose versions are recorded next to each group.
VERSION_OF = {
    "torch": ["torch", "tensorboard", "test-tube", "lightning-fabric", "numpy"],
    "tensorboardx": ["tensorboardX", "protobuf", "numpy"],
    "mlflow": ["mlflow", "mlflow-skinny", "numpy"],
    "wandb": ["wandb", "numpy"],
    "aim": ["aim", "numpy"],
    "dvclive": ["dvclive", "dvc", "numpy"],
}


def base_python() -> str:
    """The interpreter the peer environments are built from (the dev venv's base)."""
    exe = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(exe if exe.exists() else sys.executable)


def venv_python(group: str) -> Path:
    return VENVS / group / "bin" / "python"


def is_ready(group: str) -> bool:
    return (VENVS / group / "READY").exists()


def build(group: str, force: bool) -> tuple[str, bool, str]:
    env_dir = VENVS / group
    log_path = VENVS / f"{group}.log"
    if is_ready(group) and not force:
        return group, True, "already ready"
    if env_dir.exists():
        shutil.rmtree(env_dir)
    VENVS.mkdir(exist_ok=True)
    constraints = VENVS / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        def sh(cmd: list[str]) -> bool:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT) == 0

        env_py = str(venv_python(group))
        if not sh([base_python(), "-m", "venv", str(env_dir)]):
            return group, False, f"venv creation failed, see {log_path}"
        for step in GROUPS[group]:
            cmd = [env_py, "-m", "pip", "install", "--no-cache-dir", "-q",
                   "-c", str(constraints), *step]
            if not sh(cmd):
                return group, False, f"pip install {' '.join(step)} failed, see {log_path}"
        versions = {}
        for dist in VERSION_OF[group]:
            out = subprocess.run(
                [env_py, "-c",
                 f"import importlib.metadata as m; print(m.version({dist!r}))"],
                capture_output=True, text=True)
            if out.returncode == 0:
                versions[dist] = out.stdout.strip()
        (env_dir / "READY").write_text(json.dumps(versions, indent=1) + "\n")
    return group, True, f"ok in {time.monotonic() - t0:.0f} s: {versions}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="*", help=f"subset of {sorted(GROUPS)}")
    ap.add_argument("--force", action="store_true", help="rebuild ready groups")
    ap.add_argument("--jobs", type=int, default=3, help="groups installed in parallel")
    ap.add_argument("--list", action="store_true", help="print each group's state and exit")
    args = ap.parse_args()
    groups = args.groups or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown group(s) {unknown}; choose from {sorted(GROUPS)}")
    if args.list:
        for g in GROUPS:
            state = (VENVS / g / "READY").read_text().strip() if is_ready(g) else "not ready"
            print(f"{g:13s} {state}")
        return 0
    ok_all = True
    with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for group, ok, msg in pool.map(lambda g: build(g, args.force), groups):
            ok_all &= ok
            print(f"{group:13s} {'OK  ' if ok else 'FAIL'} {msg}", flush=True)
    du = subprocess.run(["du", "-sh", str(VENVS)], capture_output=True, text=True).stdout.strip()
    print(f"disk used: {du}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    sys.exit(main())
